"""Massage programs, the program runner and closed-loop control: pure logic, no hardware imports."""
