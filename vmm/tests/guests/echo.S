/* Console input: polls the UART and echoes every byte until 'q', then powers off. */
#include "common.inc"
.text
.globl _start
_start:
    puts ready
1:  mov dx, COM1 + 5              /* LSR */
    in al, dx
    test al, 1                    /* data ready */
    jz 1b
    mov dx, COM1
    in al, dx
    cmp al, 'q'
    je 2f
    out dx, al
    jmp 1b
2:  puts bye
    poweroff
    halt_forever
define_serial_puts
ready: .asciz "echo ready\n"
bye:   .asciz "\nbye\n"
