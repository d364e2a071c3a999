//! Reproducible pseudo-random inputs for running fuzz drivers in every
//! `cargo test` (the fuzz targets explore further; these catch regressions).

/// `count` inputs of `len` bytes each from one xorshift64 stream with a
/// fixed seed: the same inputs on every run and machine.
pub fn pseudo_random(count: usize, len: usize) -> impl Iterator<Item = Vec<u8>> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..count).map(move |_| {
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inputs_are_fixed_and_distinct() {
        let a: Vec<Vec<u8>> = pseudo_random(3, 16).collect();
        assert_eq!(a, pseudo_random(3, 16).collect::<Vec<_>>());
        assert_eq!(a.len(), 3);
        assert!(a.iter().all(|v| v.len() == 16));
        assert_ne!(a[0], a[1], "the stream goes on between inputs");
    }
}
