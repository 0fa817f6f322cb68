//! Which vector instructions this CPU has, found once at run time: the binary is built for any
//! x86-64 and picks its fastest kernels on the machine it runs on.

use switchboard_vector_math::cpu::Features;

/// An instruction-set level. Ordered: a CPU that runs one level runs every level below it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Isa {
    /// Whatever the compiler targets by default.
    Portable,
    /// AVX2 and FMA (x86-64 since about 2013).
    Avx2,
    /// AVX-512 with BF16 dot products (AMD Zen 4 and later, Intel Sapphire Rapids and later).
    Avx512Bf16,
}

impl Isa {
    pub fn detect() -> Self {
        let cpu = Features::detect();
        let avx2 = cpu.avx2 && cpu.fma;
        if avx2 && cpu.avx512f && cpu.avx512bf16 {
            Self::Avx512Bf16
        } else if avx2 {
            Self::Avx2
        } else {
            Self::Portable
        }
    }

    /// Every level this CPU can run, fastest first (tests compare them with each other).
    pub fn supported() -> Vec<Self> {
        let best = Self::detect();
        [Self::Avx512Bf16, Self::Avx2, Self::Portable]
            .into_iter()
            .filter(|isa| *isa <= best)
            .collect()
    }

    pub fn has_avx2(self) -> bool {
        self >= Self::Avx2
    }
}

/// Compiles a function body twice, once for AVX2+FMA and once for any CPU, and adds a leading
/// `isa` argument that picks between them. Helpers that the body calls must be
/// `#[inline(always)]` so that they are compiled with the same features.
macro_rules! multiversion {
    ($(#[$meta:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $(#[$meta])*
        $vis fn $name(isa: $crate::encoder::cpu::Isa, $($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2,fma")]
            fn wide($($arg: $ty),*) $(-> $ret)? $body
            fn narrow($($arg: $ty),*) $(-> $ret)? $body
            #[cfg(target_arch = "x86_64")]
            if isa.has_avx2() {
                // SAFETY: `isa` says this CPU has AVX2 and FMA (see `Isa::detect`).
                return unsafe { wide($($arg),*) };
            }
            let _ = isa;
            narrow($($arg),*)
        }
    };
}

pub(crate) use multiversion;
