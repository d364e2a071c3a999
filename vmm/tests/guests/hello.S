/* Prints a line on the serial console and powers off through ACPI S5. */
#include "common.inc"
.text
.globl _start
_start:
    puts msg
    poweroff
    halt_forever
define_serial_puts
msg: .asciz "Hello from the RayOS test guest\n"
