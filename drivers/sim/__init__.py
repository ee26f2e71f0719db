"""Simulated hardware: the physical plant, register-level fake I2C devices and mock pins."""
