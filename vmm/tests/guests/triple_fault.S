/* The boot IDT is empty (limit 0): an invalid opcode escalates to a triple fault. */
#include "common.inc"
.text
.globl _start
_start:
    puts msg
    ud2
    halt_forever
define_serial_puts
msg: .asciz "about to triple fault\n"
