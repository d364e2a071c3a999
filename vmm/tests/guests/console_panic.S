/* What a kernel booted with panic=-1 does: print the panic line, then reset. */
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
msg: .asciz "[    1.234567] Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000100\r\n"
