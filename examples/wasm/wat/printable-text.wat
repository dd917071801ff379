;; printable-text.wat: a jnhpd WebAssembly validator in the text form,
;; used as it is (no build step):
;;
;;   [[validator]]
;;   kind = "wasm"
;;   module = "printable-text.wat"
;;
;; It allows a STORE whose value is printable text: valid UTF-8 (no
;; overlong forms, no surrogates, nothing past U+10FFFF) without control
;; characters (C0 but the tab, DEL, and the C1 controls U+0080-U+009F
;; such as a terminal's CSI), at most 4096 bytes long. Anything else
;; (binary data, terminal escape sequences, very long values) is refused.
;; The name, the peer and the subject are not looked at.
;;
;; The interface (docs/wasm.md): jnhpd calls $alloc with the total length
;; of name, value, peer and subject, writes them back to back at the
;; address it answers, then calls $check with the four lengths. 1 allows,
;; 0 refuses. This module imports nothing.
(module
  ;; One page (64 KiB) to start with; $alloc grows it for longer STOREs.
  (memory (export "memory") 1)

  ;; The longest value allowed, in bytes.
  (global $max_value i32 (i32.const 4096))

  ;; jnhp_alloc(len) -> address: always address 0 (one buffer, reused
  ;; for every STORE), after growing the memory to hold `len` bytes.
  (func (export "jnhp_alloc") (param $len i32) (result i32)
    (local $need i32)
    ;; Pages needed for $len bytes, rounded up; more than the memory has?
    (local.set $need
      (i32.shr_u (i32.add (local.get $len) (i32.const 0xFFFF)) (i32.const 16)))
    (if (i32.gt_u (local.get $need) (memory.size))
      (then
        ;; memory.grow answers -1 past max_memory_mib: trap, which fails
        ;; this STORE (on_failure decides) rather than answer a short buffer.
        (if (i32.eq (memory.grow (i32.sub (local.get $need) (memory.size)))
                    (i32.const -1))
          (then unreachable))))
    (i32.const 0))

  ;; jnhp_check(name_len, value_len, peer_len, subject_len) -> 1 / 0.
  ;; The value is at [name_len, name_len + value_len).
  (func (export "jnhp_check")
        (param $name_len i32) (param $value_len i32)
        (param $peer_len i32) (param $subject_len i32)
        (result i32)
    (if (i32.gt_u (local.get $value_len) (global.get $max_value))
      (then (return (i32.const 0))))
    (call $printable_utf8
      (local.get $name_len)
      (i32.add (local.get $name_len) (local.get $value_len))))

  ;; Whether the bytes at [$p, $end) are printable UTF-8 text: 1 or 0.
  (func $printable_utf8 (param $p i32) (param $end i32) (result i32)
    (local $b i32)    ;; the byte at $p
    (local $more i32) ;; continuation bytes the sequence still needs
    (local $cp i32)   ;; the code point decoded so far
    (local $min i32)  ;; the least code point this sequence length may hold
    (local $c i32)    ;; a continuation byte
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $p) (local.get $end)))
        (local.set $b (i32.load8_u (local.get $p)))
        (local.set $p (i32.add (local.get $p) (i32.const 1)))
        (if (i32.lt_u (local.get $b) (i32.const 0x80))
          (then
            ;; ASCII: the tab and 0x20-0x7E are printable.
            (if (i32.and (i32.lt_u (local.get $b) (i32.const 0x20))
                         (i32.ne (local.get $b) (i32.const 0x09)))
              (then (return (i32.const 0))))
            (if (i32.eq (local.get $b) (i32.const 0x7F))
              (then (return (i32.const 0))))
            (br $next)))
        ;; A lead byte says how many continuation bytes follow. 0x80-0xC1
        ;; cannot start a sequence (continuations, overlong C0/C1), nor
        ;; can 0xF5-0xFF (past U+10FFFF).
        (if (i32.lt_u (local.get $b) (i32.const 0xC2))
          (then (return (i32.const 0))))
        (if (i32.lt_u (local.get $b) (i32.const 0xE0))
          (then
            (local.set $more (i32.const 1))
            (local.set $cp (i32.and (local.get $b) (i32.const 0x1F)))
            (local.set $min (i32.const 0x80)))
          (else (if (i32.lt_u (local.get $b) (i32.const 0xF0))
            (then
              (local.set $more (i32.const 2))
              (local.set $cp (i32.and (local.get $b) (i32.const 0x0F)))
              (local.set $min (i32.const 0x800)))
            (else (if (i32.lt_u (local.get $b) (i32.const 0xF5))
              (then
                (local.set $more (i32.const 3))
                (local.set $cp (i32.and (local.get $b) (i32.const 0x07)))
                (local.set $min (i32.const 0x10000)))
              (else (return (i32.const 0))))))))
        ;; Each continuation byte is 10xxxxxx and adds six bits.
        (loop $continuation
          (if (i32.ge_u (local.get $p) (local.get $end))
            (then (return (i32.const 0)))) ;; cut short by the value's end
          (local.set $c (i32.load8_u (local.get $p)))
          (if (i32.ne (i32.and (local.get $c) (i32.const 0xC0)) (i32.const 0x80))
            (then (return (i32.const 0))))
          (local.set $cp
            (i32.or (i32.shl (local.get $cp) (i32.const 6))
                    (i32.and (local.get $c) (i32.const 0x3F))))
          (local.set $p (i32.add (local.get $p) (i32.const 1)))
          (local.set $more (i32.sub (local.get $more) (i32.const 1)))
          (br_if $continuation (local.get $more)))
        ;; Overlong (a shorter sequence would do), a UTF-16 surrogate, past
        ;; Unicode, or a C1 control: not printable text.
        (if (i32.lt_u (local.get $cp) (local.get $min))
          (then (return (i32.const 0))))
        (if (i32.eq (i32.and (local.get $cp) (i32.const 0xFFFFF800)) (i32.const 0xD800))
          (then (return (i32.const 0))))
        (if (i32.gt_u (local.get $cp) (i32.const 0x10FFFF))
          (then (return (i32.const 0))))
        (if (i32.le_u (local.get $cp) (i32.const 0x9F))
          (then (return (i32.const 0))))
        (br $next)))
    (i32.const 1))
)
