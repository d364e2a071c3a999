/* Reports a panic through the pvpanic port after checking the device is there. */
#include "common.inc"
.text
.globl _start
_start:
    mov dx, PVPANIC
    in al, dx
    test al, 1
    jz 1f
    puts msg
    mov dx, PVPANIC
    mov al, 1
    out dx, al
    halt_forever
1:  puts nodev
    poweroff
    halt_forever
define_serial_puts
msg: .asciz "Kernel panic - not syncing: pvpanic test guest\n"
nodev: .asciz "no pvpanic device\n"
