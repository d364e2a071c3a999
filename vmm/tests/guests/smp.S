/* SMP bring-up, as an OS does it: count the enabled local APICs in the MADT
 * (zero page -> RSDP -> XSDT -> APIC), wake the other CPUs with
 * INIT-SIPI-SIPI through the xAPIC at 0xfee00000, and wait until each
 * application processor (started in real mode at 0x6000) has checked in.
 * Prints "cpus up: N of M". */
#include "common.inc"
.set APIC_ICR_LOW, 0xfee00300
.set APIC_ICR_HIGH, 0xfee00310
.set COUNTER, 0x7f00
.text
.globl _start
_start:
    mov dword ptr [COUNTER], 1        /* the boot CPU */
    /* M = enabled local APICs in the MADT. */
    mov rax, [rsi + 0x70]             /* boot_params.acpi_rsdp_addr */
    mov rbx, [rax + 24]               /* RSDP.XsdtAddress */
    mov ecx, [rbx + 4]                /* XSDT length */
    lea rdx, [rbx + 36]
    add rcx, rbx
find_madt:
    cmp rdx, rcx
    jae no_madt
    mov rdi, [rdx]
    cmp dword ptr [rdi], 0x43495041   /* "APIC" */
    je got_madt
    add rdx, 8
    jmp find_madt
got_madt:
    mov ecx, [rdi + 4]
    add rcx, rdi
    lea rdx, [rdi + 44]
    xor r8d, r8d                      /* M */
count_lapics:
    cmp rdx, rcx
    jae counted
    cmp byte ptr [rdx], 0
    jne next_entry
    test byte ptr [rdx + 4], 1
    jz next_entry
    inc r8d
next_entry:
    movzx eax, byte ptr [rdx + 1]
    test eax, eax
    jz counted
    add rdx, rax
    jmp count_lapics
counted:
    mov eax, r8d
    add al, '0'
    mov byte ptr [rip + total], al

    /* INIT to all excluding self, then SIPI (vector 0x06 -> 0x6000) twice. */
    mov rbx, APIC_ICR_HIGH
    mov dword ptr [rbx], 0
    mov rbx, APIC_ICR_LOW
    mov dword ptr [rbx], 0x000c4500
    mov ecx, 10000
1:  pause
    loop 1b
    mov dword ptr [rbx], 0x000c4606
    mov ecx, 10000
2:  pause
    loop 2b
    mov dword ptr [rbx], 0x000c4606

    /* Wait for the APs, bounded. */
    mov rcx, 400000000
3:  cmp dword ptr [COUNTER], r8d
    jae 4f
    pause
    dec rcx
    jnz 3b
4:  mov eax, dword ptr [COUNTER]
    add al, '0'
    mov byte ptr [rip + count], al
    puts msg
    poweroff
    halt_forever
no_madt:
    puts nomadt
    poweroff
    halt_forever
define_serial_puts
msg:   .ascii "cpus up: "
count: .byte '?'
       .ascii " of "
total: .byte '?'
       .asciz "\n"
nomadt: .asciz "no MADT\n"

.section .ap, "ax"
.code16
ap_start:
    xor ax, ax
    mov ds, ax
    lock inc dword ptr ds:[COUNTER]
5:  cli
    hlt
    jmp 5b
