// What the user should do for each latched fault code (device/safety/faults.py FaultCode).
// tests/test_remote_files.py checks that every code has a text here.

const CALL = "If it comes back, stop using the massager and call service.";

export const FAULT_HELP = {
  OVER_TEMPERATURE: "The heating pad got too hot. Take your feet out, let it cool for 15 minutes, then reset. " + CALL,
  HEATER_OVER_TARGET: "The pad stayed warmer than the target you set. Let it cool for a few minutes, then reset. " + CALL,
  HEATER_RUNAWAY: "The pad kept heating while it should not. Switch the massager off at the wall and call service; do not use heat.",
  HEATER_NOT_HEATING: "The pad does not warm up. You can use the massager without heat; call service to have the heater checked.",
  HEAT_BALANCE: "The pad warmed differently from what its power explains. Let it cool, then reset. " + CALL,
  TEMP_SENSOR_FAULT: "A temperature sensor gives readings that cannot be right. Reset once. " + CALL,
  OVER_PRESSURE: "An airbag went above its safe pressure and was vented. Check nothing presses on the unit, then reset. " + CALL,
  PRESSURE_NOT_RISING: "An airbag does not fill: a hose may be loose or a bag leaking. Check the hoses, then reset. " + CALL,
  PRESSURE_SENSOR_FAULT: "A pressure sensor gives readings that cannot be right. Reset once. " + CALL,
  COMPRESSION_TOO_LONG: "An airbag stayed squeezed too long and was vented. Reset, and try a gentler program. " + CALL,
  VALVE_STUCK: "An airbag does not let its air out. Take your feet out carefully, switch the massager off at the wall and call service.",
  PUMP_OVERRUN: "The air pump ran too long without reaching its pressure. Check the hoses, then reset. " + CALL,
  MOTOR_STALL: "A roller is blocked. Take your feet out, check nothing is caught in the rollers, then reset.",
  RELAY_WELDED: "The power switch inside does not turn off. Switch the massager off at the wall and call service.",
  POWER_FAULT: "The 12 V supply is wrong. Check the power adapter is the original and firmly plugged in, then reset. " + CALL,
  SENSOR_BUS_FAULT: "The device lost contact with its sensors. Switch it off at the wall for 10 seconds, then on. " + CALL,
  STORAGE_FAULT: "The device could not read back what it had stored (its SD card may be failing). Reset; if it comes back after a restart, call service to replace the card.",
  CONTROL_LOOP_STALL: "The device's control program stopped responding and made everything safe. Reset it. " + CALL,
};

export const UNKNOWN_FAULT_HELP =
  "The device stopped to stay safe. Take your feet out, then reset. " + CALL;

export function faultHelp(code) {
  return Object.hasOwn(FAULT_HELP, code) ? FAULT_HELP[code] : UNKNOWN_FAULT_HELP;
}
