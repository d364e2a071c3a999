/* Never stops by itself: for host-side stop tests (signals). */
#include "common.inc"
.text
.globl _start
_start:
    puts msg
    cli
1:  hlt
    jmp 1b
define_serial_puts
msg: .asciz "spinning\n"
