/* PCI configuration access both ways: mechanism #1 (0xcf8/0xcfc) and ECAM at
 * 0xe0000000. Reads the host bridge's ids at 00:00.0, checks an empty slot
 * reads all ones, and that the two methods agree. */
#include "common.inc"
.set ECAM, 0xe0000000
.text
.globl _start
_start:
    mov dx, 0xcf8
    mov eax, 0x80000000           /* 00:00.0, register 0 */
    out dx, eax
    in eax, dx
    cmp eax, 0x80000000           /* the latch reads back */
    jne fail
    mov dx, 0xcfc
    in eax, dx
    mov ebx, eax                  /* vendor/device via ports */
    mov rsi, ECAM
    mov ecx, [rsi]                /* vendor/device via ECAM */
    cmp ebx, ecx
    jne fail
    cmp ebx, 0x00081b36           /* host bridge ids */
    jne fail
    mov ecx, [rsi + (31 << 15)]   /* slot 31: empty */
    cmp ecx, 0xffffffff
    jne fail
    mov ecx, [rsi + 8]            /* class code: host bridge 06/00 */
    shr ecx, 16
    cmp ecx, 0x0600
    jne fail
    puts ok
    poweroff
    halt_forever
fail:
    puts bad
    poweroff
    halt_forever
define_serial_puts
ok:  .asciz "pci ok\n"
bad: .asciz "pci FAILED\n"
