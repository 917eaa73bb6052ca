// The context switch. docs/fibers.md explains the frame layout and why each register is saved.
//
//   void *spindle_context_swap(void **save_sp, void *to_sp, void *argument);
//
// Pushes the callee-saved registers and the floating-point control state of the running
// context onto its own stack, stores the stack pointer into *save_sp, loads to_sp, pops the
// target's saved state and continues the target, which sees `argument` as the return value of
// its own spindle_context_swap call (or, for a fresh context, as the first argument of
// spindle_fiber_main).
//
//   void *spindle_context_make(void *stack_top, spindle_fiber_t *fiber);
//
// Writes an initial frame below stack_top whose "return address" is spindle_context_entry,
// with the fiber pointer in a callee-saved register, and returns the stack pointer to swap to.

#if defined(__x86_64__)

    .text
    .p2align 4
    .globl spindle_context_swap
    .hidden spindle_context_swap
    .type spindle_context_swap, @function
spindle_context_swap:
    .cfi_startproc
    // rdi = save_sp, rsi = to_sp, rdx = argument. Callee-saved (System V): rbx, rbp, r12-r15,
    // plus the control bits of MXCSR and the x87 control word.
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    subq $16, %rsp
    stmxcsr (%rsp)
    fnstcw 4(%rsp)
    movq %rsp, (%rdi)

    movq %rsi, %rsp
    ldmxcsr (%rsp)
    fldcw 4(%rsp)
    addq $16, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    // Pop the return address and jump to it rather than `ret`: after a stack swap the return
    // predictor always misses, and `ret` costs about 5 ns more here (docs/fibers.md,
    // "Measured facts", "Context switch costs").
    popq %rcx
    movq %rdx, %rax          // return value for a resumed context
    movq %rdx, %rdi          // first argument for a fresh one (spindle_context_entry)
    jmpq *%rcx
    .cfi_endproc
    .size spindle_context_swap, .-spindle_context_swap

    // First code a fresh context runs: rdi = argument, r13 = fiber. On entry rsp is 16-byte
    // aligned (as after a `ret`), so the call below gives the callee the ABI's alignment.
    .p2align 4
    .globl spindle_context_entry
    .hidden spindle_context_entry
    .type spindle_context_entry, @function
spindle_context_entry:
    .cfi_startproc
    .cfi_undefined rip       // the outermost frame of this stack: unwinders stop here
    movq %r13, %rsi
    call spindle_fiber_main
    ud2                      // spindle_fiber_main never returns
    .cfi_endproc
    .size spindle_context_entry, .-spindle_context_entry

    .p2align 4
    .globl spindle_context_make
    .hidden spindle_context_make
    .type spindle_context_make, @function
spindle_context_make:
    .cfi_startproc
    // rdi = stack_top (16-byte aligned), rsi = fiber. Frame, from the returned sp upward:
    //   +0 MXCSR (4 bytes)  +4 x87 control word (2 bytes)  +8 padding
    //   +16 r15  +24 r14  +32 r13 = fiber  +40 r12  +48 rbx  +56 rbp = 0
    //   +64 return address = spindle_context_entry
    // The return-address slot sits at top-24, so rsp = top-16 (16-byte aligned) after the pop.
    leaq -88(%rdi), %rax
    movl $0x1F80, (%rax)     // default MXCSR: all exceptions masked, round to nearest
    movw $0x037F, 4(%rax)    // default x87 control word
    movq $0, 16(%rax)
    movq $0, 24(%rax)
    movq %rsi, 32(%rax)
    movq $0, 40(%rax)
    movq $0, 48(%rax)
    movq $0, 56(%rax)
    leaq spindle_context_entry(%rip), %rcx
    movq %rcx, 64(%rax)
    ret
    .cfi_endproc
    .size spindle_context_make, .-spindle_context_make

#elif defined(__aarch64__)

    .text
    .p2align 4
    .globl spindle_context_swap
    .hidden spindle_context_swap
    .type spindle_context_swap, %function
spindle_context_swap:
    .cfi_startproc
    // x0 = save_sp, x1 = to_sp, x2 = argument. Callee-saved (AAPCS64): x19-x28, x29 (frame
    // pointer), x30 (link register), the low 64 bits of v8-v15 (d8-d15), and FPCR.
    sub sp, sp, #176
    stp x19, x20, [sp, #0]
    stp x21, x22, [sp, #16]
    stp x23, x24, [sp, #32]
    stp x25, x26, [sp, #48]
    stp x27, x28, [sp, #64]
    stp x29, x30, [sp, #80]
    stp d8, d9, [sp, #96]
    stp d10, d11, [sp, #112]
    stp d12, d13, [sp, #128]
    stp d14, d15, [sp, #144]
    mrs x9, fpcr
    str x9, [sp, #160]
    mov x9, sp
    str x9, [x0]

    mov sp, x1
    ldp x19, x20, [sp, #0]
    ldp x21, x22, [sp, #16]
    ldp x23, x24, [sp, #32]
    ldp x25, x26, [sp, #48]
    ldp x27, x28, [sp, #64]
    ldp x29, x30, [sp, #80]
    ldp d8, d9, [sp, #96]
    ldp d10, d11, [sp, #112]
    ldp d12, d13, [sp, #128]
    ldp d14, d15, [sp, #144]
    ldr x9, [sp, #160]
    msr fpcr, x9
    add sp, sp, #176
    mov x0, x2               // return value, and first argument of a fresh context
    // `ret` here, not an indirect branch: with BTI enforced a `br` to a return site would need
    // a landing pad there (docs/fibers.md, "Measured facts", "Context switch costs").
    ret
    .cfi_endproc
    .size spindle_context_swap, .-spindle_context_swap

    .p2align 4
    .globl spindle_context_entry
    .hidden spindle_context_entry
    .type spindle_context_entry, %function
spindle_context_entry:
    .cfi_startproc
    .cfi_undefined x30       // the outermost frame of this stack: unwinders stop here
    mov x1, x19              // x0 = argument, x1 = fiber
    bl spindle_fiber_main
    brk #0                   // spindle_fiber_main never returns
    .cfi_endproc
    .size spindle_context_entry, .-spindle_context_entry

    .p2align 4
    .globl spindle_context_make
    .hidden spindle_context_make
    .type spindle_context_make, %function
spindle_context_make:
    .cfi_startproc
    // x0 = stack_top (16-byte aligned), x1 = fiber. A 176-byte frame as spindle_context_swap
    // leaves it: x19 = fiber, x29 = 0, x30 = spindle_context_entry, FPCR = 0 (IEEE defaults),
    // every other slot zero.
    sub x9, x0, #176
    mov x10, #0
    mov x11, x9
1:  str x10, [x11], #8
    cmp x11, x0
    b.lo 1b
    str x1, [x9, #0]
    adrp x10, spindle_context_entry
    add x10, x10, :lo12:spindle_context_entry
    str x10, [x9, #88]
    mov x0, x9
    ret
    .cfi_endproc
    .size spindle_context_make, .-spindle_context_make

#else
#error "Spindle's context switch supports x86_64 and aarch64 only"
#endif

// No executable stack for the binary that links this file.
    .section .note.GNU-stack, "", %progbits
