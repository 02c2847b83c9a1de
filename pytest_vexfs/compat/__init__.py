"""What users bring from the old framework: shell test scripts and DomainBase classes."""
