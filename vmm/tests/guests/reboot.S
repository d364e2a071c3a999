/* Resets the machine through the FADT reset register. */
#include "common.inc"
.text
.globl _start
_start:
    puts msg
    mov dx, ACPI_RESET
    mov al, 1
    out dx, al
    halt_forever
define_serial_puts
msg: .asciz "rebooting\n"
