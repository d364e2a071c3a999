/* Resets the machine the legacy way: i8042 command 0xfe. */
#include "common.inc"
.text
.globl _start
_start:
    mov al, 0xfe
    out 0x64, al
    halt_forever
