;; The same check as the function validators of bench/validators.sh
;; (max_bytes 1024, then the regex ^[a-z0-9-]+$ on the name), as a wasm
;; validator: the STORE is written at address 1024 by jnhpd.
(module
  (memory (export "memory") 1)
  (func (export "jnhp_alloc") (param $len i32) (result i32)
    ;; Grow to fit (a page is 64 KiB); the buffer starts at 1024.
    (local $need i32)
    (local.set $need (i32.add (i32.const 1024) (local.get $len)))
    (if (i32.gt_u (local.get $need) (i32.mul (memory.size) (i32.const 65536)))
      (then
        (if (i32.eq
              (memory.grow (i32.sub (i32.div_u (i32.add (local.get $need) (i32.const 65535)) (i32.const 65536))
                                    (memory.size)))
              (i32.const -1))
          (then (return (i32.const -1))))))
    (i32.const 1024))
  (func (export "jnhp_check") (param $n i32) (param $v i32) (param $p i32) (param $s i32) (result i32)
    (local $i i32) (local $c i32)
    (if (i32.gt_u (local.get $v) (i32.const 1024)) (then (return (i32.const 0))))
    (if (i32.eqz (local.get $n)) (then (return (i32.const 0))))
    (loop $next
      (local.set $c (i32.load8_u (i32.add (i32.const 1024) (local.get $i))))
      (if (i32.eqz
            (i32.or (i32.or
              (i32.and (i32.ge_u (local.get $c) (i32.const 97)) (i32.le_u (local.get $c) (i32.const 122)))
              (i32.and (i32.ge_u (local.get $c) (i32.const 48)) (i32.le_u (local.get $c) (i32.const 57))))
              (i32.eq (local.get $c) (i32.const 45))))
        (then (return (i32.const 0))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $next (i32.lt_u (local.get $i) (local.get $n))))
    (i32.const 1)))
