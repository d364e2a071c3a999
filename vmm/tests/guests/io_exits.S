/* Port and MMIO exits: unclaimed ports and MMIO read as all ones, writes are
 * dropped, and guest RAM written through the identity map reads back. */
#include "common.inc"
.set UNCLAIMED_MMIO, 0xd0000000
.text
.globl _start
_start:
    in al, 0x99                   /* unclaimed port */
    cmp al, 0xff
    jne fail
    mov dx, 0x3fb                 /* COM1 LCR: scratch-free register that reads back */
    mov al, 0x03
    out dx, al
    in al, dx
    cmp al, 0x03
    jne fail
    mov rbx, UNCLAIMED_MMIO
    mov dword ptr [rbx], 0x12345678  /* MMIO write exit, dropped */
    mov eax, dword ptr [rbx]      /* MMIO read exit */
    cmp eax, 0xffffffff
    jne fail
    mov qword ptr [0x1000000], 0x5a5a /* RAM at 16 MiB */
    cmp qword ptr [0x1000000], 0x5a5a
    jne fail
    puts ok
    poweroff
    halt_forever
fail:
    puts bad
    poweroff
    halt_forever
define_serial_puts
ok:  .asciz "io-exits ok\n"
bad: .asciz "io-exits FAILED\n"
