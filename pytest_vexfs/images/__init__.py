"""Building what a guest boots: the guest image from Debian packages (`image.py`), the debug kernel from
Debian's kernel source (`debug_kernel.py`, configured by `kernel/debug.config`), and the files that run
inside the guest (`files/`: its init, agent and helpers). Both builds are cached by digest. Nothing here
imports pytest."""
