//! The generator's source of randomness: a SplitMix64 stream per event, the random strings of
//! the standard Nexmark generator (`nextString`, `nextExtra`), and the pool padding is cut from.
//!
//! Each event draws from its own stream, seeded by the source seed and the event number, as the
//! standard generator seeds a `java.util.Random` with the event id: any event can be generated
//! alone, and the rows do not depend on which columns a query reads.

/// SplitMix64 (Steele, Lea, Flood 2014): tiny, fast, and good enough for synthetic data.
#[derive(Debug, Clone)]
pub struct Rng {
    state: u64,
}

const GOLDEN_GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;

/// The SplitMix64 output function: a bijective 64-bit mixer.
fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A draw as a number uniform in `[0, 1)`: its top 53 bits as a fraction.
pub fn unit_f64(draw: u64) -> f64 {
    (draw >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

impl Rng {
    /// A stream for auxiliary data (channel names, urls) that is not tied to an event.
    pub fn new(seed: u64) -> Self {
        Self {
            state: mix64(seed ^ 0x5eed_5eed_5eed_5eed),
        }
    }

    /// The stream of event `event` of a source seeded with `seed` (see [`EventStreams`]).
    pub fn for_event(seed: u64, event: u64) -> Self {
        EventStreams::new(seed).of(event)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(GOLDEN_GAMMA);
        mix64(self.state)
    }

    /// Moves past `draws` draws without computing them: SplitMix64's state is a counter, so
    /// the draws after them are the ones the stream would have produced anyway. This lets a
    /// row skip the draws of a column the query does not read.
    pub fn skip(&mut self, draws: u64) {
        self.state = self.state.wrapping_add(GOLDEN_GAMMA.wrapping_mul(draws));
    }

    /// Uniform in `0..bound` (0 when `bound` is 0), by Lemire's multiply-shift.
    pub fn below(&mut self, bound: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(bound)) >> 64) as u64
    }

    /// Uniform in `[0, 1)`.
    pub fn unit_f64(&mut self) -> f64 {
        unit_f64(self.next_u64())
    }

    /// Appends `len` random lower-case ASCII letters to `out`. One 64-bit draw yields eight
    /// letters: each is the next base-26 digit of the draw read as a fraction, which leaves
    /// enough unused bits for the last one to stay uniform.
    pub fn push_letters(&mut self, len: usize, out: &mut Vec<u8>) {
        out.reserve(len);
        let mut remaining = len;
        while remaining > 0 {
            let mut fraction = self.next_u64();
            for _ in 0..remaining.min(8) {
                let product = u128::from(fraction) * 26;
                out.push(b'a' + (product >> 64) as u8);
                fraction = product as u64;
            }
            remaining = remaining.saturating_sub(8);
        }
    }

    /// The standard `nextString(maxLength, special)`: 3 to `max_len - 1` characters, each a
    /// random letter or, one time in 13, `special`; trailing and leading spaces are trimmed.
    /// Appends to `out` and returns the number of bytes appended.
    pub fn push_string(&mut self, max_len: usize, special: u8, out: &mut Vec<u8>) -> usize {
        const MIN_STRING_LENGTH: usize = 3;
        let start = out.len();
        let len = MIN_STRING_LENGTH
            + self.below(max_len.saturating_sub(MIN_STRING_LENGTH) as u64) as usize;
        for _ in 0..len {
            // One draw decides both: 26 of 338 values are the special character (1 in 13),
            // the other 312 map evenly onto the 26 letters.
            let value = self.below(26 * 13) as u8;
            out.push(if value < 26 {
                special
            } else {
                b'a' + (value - 26) % 26
            });
        }
        if special == b' ' {
            let trimmed_end = out[start..]
                .iter()
                .rposition(|&b| b != b' ')
                .map_or(start, |last| start + last + 1);
            out.truncate(trimmed_end);
            let leading = out[start..].iter().take_while(|&&b| b == b' ').count();
            out.drain(start..start + leading);
        }
        out.len() - start
    }

    /// The length of the standard `nextExtra` padding: what brings a row of `current_size`
    /// bytes to `average_size` bytes on average (plus or minus 20%); 0 if it is already larger.
    pub fn extra_len(&mut self, current_size: usize, average_size: usize) -> usize {
        if current_size > average_size {
            return 0;
        }
        let desired = average_size - current_size;
        let delta = (desired as f64 * 0.2).round() as usize;
        let min_size = desired - delta;
        if delta == 0 {
            min_size
        } else {
            min_size + self.below(2 * delta as u64) as usize
        }
    }
}

/// The per-event streams of one seed, with the seed hashed once rather than once per event.
#[derive(Debug, Clone, Copy)]
pub struct EventStreams {
    key: u64,
}

impl EventStreams {
    pub fn new(seed: u64) -> Self {
        Self { key: mix64(seed) }
    }

    /// The stream of event `event`. Hashing the event number (instead of offsetting the state)
    /// keeps the streams of neighbouring events apart.
    pub fn of(&self, event: u64) -> Rng {
        Rng {
            state: mix64(event.wrapping_add(self.key)),
        }
    }
}

/// Random letters that `extra` padding is cut from. The standard generator draws every
/// padding letter; a slice at a random offset of a pool drawn once per reader looks the same
/// to every query (the column only adds bytes) and costs one draw and a copy instead of ~70
/// draws per bid.
#[derive(Debug, Clone)]
pub struct LetterPool {
    letters: String,
}

impl LetterPool {
    /// Distinct start offsets; with lengths varying too, padding values rarely repeat.
    const OFFSETS: usize = 1 << 16;
    /// Longer than any padding (auctions: at most 1.2 * 500 bytes).
    const MAX_LEN: usize = 1024;

    pub fn new(seed: u64) -> Self {
        let mut letters = Vec::with_capacity(Self::OFFSETS + Self::MAX_LEN);
        Rng::new(seed ^ 0x7e77_e257).push_letters(Self::OFFSETS + Self::MAX_LEN, &mut letters);
        Self {
            letters: String::from_utf8_lossy(&letters).into_owned(),
        }
    }

    /// `len` random letters (at most 1024).
    pub fn letters(&self, len: usize, rng: &mut Rng) -> &str {
        let start = rng.below(Self::OFFSETS as u64) as usize;
        self.letters
            .get(start..start + len.min(Self::MAX_LEN))
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_deterministic_and_distinct() {
        let draws = |seed, event| {
            let mut rng = Rng::for_event(seed, event);
            [rng.next_u64(), rng.next_u64()]
        };
        assert_eq!(draws(1, 5), draws(1, 5));
        assert_ne!(draws(1, 5), draws(1, 6));
        assert_ne!(draws(1, 5), draws(2, 5));
        // Neighbouring events must not share a shifted stream.
        assert_ne!(draws(1, 5)[1], draws(1, 6)[0]);
    }

    #[test]
    fn skipping_draws_lands_where_drawing_does() {
        let mut drawn = Rng::for_event(7, 11);
        let mut skipped = drawn.clone();
        for _ in 0..3 {
            drawn.next_u64();
        }
        skipped.skip(3);
        assert_eq!(drawn.next_u64(), skipped.next_u64());
    }

    #[test]
    fn letters_are_uniform_enough() {
        let mut rng = Rng::new(3);
        let mut letters = Vec::new();
        rng.push_letters(26_000, &mut letters);
        assert_eq!(letters.len(), 26_000);
        let mut counts = [0u32; 26];
        for letter in letters {
            assert!(letter.is_ascii_lowercase());
            counts[usize::from(letter - b'a')] += 1;
        }
        // Expected 1000 each; a broken digit extraction concentrates on a few letters.
        assert!(
            counts.iter().all(|&c| (850..1150).contains(&c)),
            "{counts:?}"
        );
    }

    #[test]
    fn strings_have_the_standard_lengths() {
        let mut rng = Rng::new(4);
        for _ in 0..1000 {
            let mut out = Vec::new();
            let len = rng.push_string(7, b' ', &mut out);
            assert_eq!(len, out.len());
            assert!(len <= 6, "{out:?}");
            assert!(out.first() != Some(&b' ') && out.last() != Some(&b' '));

            // 68 bytes wanted, +-20% (14).
            let extra_len = rng.extra_len(32, 100);
            assert!((54..82).contains(&extra_len), "{extra_len}");
        }
        assert_eq!(rng.extra_len(120, 100), 0);

        let pool = LetterPool::new(5);
        let padding = pool.letters(600, &mut rng);
        assert_eq!(padding.len(), 600);
        assert!(padding.bytes().all(|b| b.is_ascii_lowercase()));
    }
}
