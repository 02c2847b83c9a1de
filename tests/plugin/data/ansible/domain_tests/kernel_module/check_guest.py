import pytest


@pytest.mark.kernel_module
def test_guest_kernel_answers(machine) -> None:
    status, out, _ = machine.run("uname -r && test -e /lib/modules/$(uname -r)/build/Makefile && echo headers")
    assert status == 0 and "headers" in out
