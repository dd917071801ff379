//! Fixed arrays of figures indexed by what they count: an enum's variants
//! name the slots ([`Slot`]), so no figure is found by a magic number.

use std::marker::PhantomData;
use std::ops::{Index, IndexMut};

/// An enum whose variants name the slots of a fixed array of figures
/// ([`Slots`]): figures are found by what they count, never by a number.
pub trait Slot: Copy + 'static {
    /// Every variant, in slot order: the order `/metrics` lists them in.
    const ALL: &'static [Self];
    /// The variant's place in [`Slot::ALL`].
    fn index(self) -> usize;
}

/// Declares a fieldless enum whose variants are [`Slot`]s, each with the
/// label value `/metrics` gives it: `ALL` lists the variants in
/// declaration order (their discriminants, so `index` is a cast), `COUNT`
/// sizes the arrays they index.
macro_rules! slot_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $($(#[$vmeta:meta])* $variant:ident => $label:literal,)+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)+
        }

        impl $name {
            /// How many variants (slots) there are.
            pub const COUNT: usize = <$name as Slot>::ALL.len();

            /// Its label value in `/metrics`.
            pub const fn label(self) -> &'static str {
                match self {
                    $($name::$variant => $label,)+
                }
            }
        }

        impl Slot for $name {
            const ALL: &'static [Self] = &[$($name::$variant,)+];

            fn index(self) -> usize {
                self as usize
            }
        }
    };
}

/// One `T` per variant of `K`, indexed by `K`. `N` is the number of
/// variants (`K::ALL.len()`, checked at compile time where one is made);
/// the aliases below ([`PerCommand`], ...) spell it once.
#[derive(Debug, Clone, Copy)]
pub struct Slots<K, T, const N: usize> {
    slots: [T; N],
    key: PhantomData<K>,
}

impl<K: Slot, T, const N: usize> Slots<K, T, N> {
    /// Each slot's value from its variant.
    pub fn from_fn(mut f: impl FnMut(K) -> T) -> Self {
        const { assert!(N == K::ALL.len(), "one slot per variant") };
        Slots {
            slots: std::array::from_fn(|i| f(K::ALL[i])),
            key: PhantomData,
        }
    }

    /// Every variant with its value, in slot order.
    pub fn iter(&self) -> impl Iterator<Item = (K, &T)> {
        K::ALL.iter().copied().zip(&self.slots)
    }

    /// Every value, in slot order.
    pub fn values(&self) -> std::slice::Iter<'_, T> {
        self.slots.iter()
    }

    /// Each value mapped, slot by slot.
    pub fn map<U>(&self, mut f: impl FnMut(&T) -> U) -> Slots<K, U, N> {
        Slots::from_fn(|k| f(&self[k]))
    }
}

impl<K: Slot, T: Default, const N: usize> Default for Slots<K, T, N> {
    fn default() -> Self {
        Slots::from_fn(|_| T::default())
    }
}

impl<K: Slot, T, const N: usize> Index<K> for Slots<K, T, N> {
    type Output = T;

    fn index(&self, key: K) -> &T {
        &self.slots[key.index()]
    }
}

impl<K: Slot, T, const N: usize> IndexMut<K> for Slots<K, T, N> {
    fn index_mut(&mut self, key: K) -> &mut T {
        &mut self.slots[key.index()]
    }
}
