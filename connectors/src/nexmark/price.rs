//! The standard Nexmark price (`PriceGenerator.nextPrice`): log-uniform between 1.00 and
//! 1,000,000.00, in cents.
//!
//! The price is `round(100 * e^(6u ln 10))` for a uniform `u` in `[0, 1)`. The exponential is
//! computed here rather than by the C library's `exp`, which was a quarter of the cost of a bid
//! row: a call through the PLT that cannot be inlined or overlapped with the row's other work.
//! The method is the usual table-driven one (Tang 1989; glibc's and musl's `exp` use it too):
//! `e^x = 2^(k / 256) * e^r` with `k = round(x * 256 / ln 2)`, the 256 powers `2^(j / 256)`
//! in a table and `e^r` for `|r| <= ln 2 / 512` by a short Taylor polynomial. It stays
//! within one unit in the last place of libm's `exp`, so a price could differ from the
//! standard formula's only when `100 e^x` lies within an ulp of a half cent: none did among
//! 200 million sampled prices, so the generated values are those of the libm version.

use std::f64::consts::{LN_2, LN_10};

use super::random::{Rng, unit_f64};

/// Powers of two per doubling in the table.
const STEPS: usize = 256;
/// `ln 2` split so that `k / STEPS * LN2_HI` is exact for the `k` used here: fdlibm's
/// constants, given by their bits; the high part has 32 significant bits, `k / STEPS` at most 13.
const LN2_HI: f64 = f64::from_bits(0x3fe6_2e42_fee0_0000);
const LN2_LO: f64 = f64::from_bits(0x3dea_39ef_3579_3c76);
/// 1.5 * 2^52: adding it to a number below 2^51 in magnitude rounds it to an integer.
const ROUNDING_SHIFT: f64 = 6_755_399_441_055_744.0;

/// Draws prices.
#[derive(Debug, Clone)]
pub struct PriceGenerator {
    /// `2^(j / STEPS)` for `j` in `0..STEPS`.
    powers: [f64; STEPS],
}

impl Default for PriceGenerator {
    fn default() -> Self {
        Self::new()
    }
}

impl PriceGenerator {
    pub fn new() -> Self {
        Self {
            powers: std::array::from_fn(|j| (j as f64 / STEPS as f64).exp2()),
        }
    }

    /// The next price, in cents, from one draw of `rng`.
    pub fn next_price(&self, rng: &mut Rng) -> i64 {
        self.price_of_draw(rng.next_u64())
    }

    /// The price that the draw `draw` stands for. Generating a column of prices from its draws
    /// in a loop of its own is faster than pricing each row as it is drawn: the exponential is
    /// a long chain of dependent operations, which overlaps between the rows of that loop but
    /// not between rows that do much else.
    pub fn price_of_draw(&self, draw: u64) -> i64 {
        cents(self.exp(log_price(draw)))
    }

    /// `e^x` for `0 <= x < 700`: the table entry and power of two nearest `x`, times the
    /// exponential of what remains.
    fn exp(&self, x: f64) -> f64 {
        debug_assert!((0.0..700.0).contains(&x), "{x}");
        // Adding 1.5 * 2^52 rounds x * STEPS / ln 2 to an integer k, left in the low bits of
        // the sum: no float-to-integer conversion, which costs a dozen instructions on
        // baseline x86-64.
        let shifted = x * (STEPS as f64 / LN_2) + ROUNDING_SHIFT;
        let k = shifted.to_bits() & 0xffff_ffff;
        let steps = (shifted - ROUNDING_SHIFT) * (1.0 / STEPS as f64);
        let r = (x - steps * LN2_HI) - steps * LN2_LO;
        // e^r - 1 for |r| <= ln 2 / 512 (~0.00136), evaluated in two halves that do not wait
        // for each other: the first omitted term, r^6 / 720, is below 2^-66.
        let r2 = r * r;
        let expm1 =
            (r + r2 * (1.0 / 2.0 + r * (1.0 / 6.0))) + (r2 * r2) * (1.0 / 24.0 + r * (1.0 / 120.0));
        let power = self.powers[k as usize % STEPS];
        let scale = f64::from_bits((1023 + k / STEPS as u64) << 52);
        (power + power * expm1) * scale
    }
}

/// The natural logarithm of the price in dollars of a draw: uniform in `[0, 6 ln 10)`.
fn log_price(draw: u64) -> f64 {
    unit_f64(draw) * 6.0 * LN_10
}

/// A price of `dollars` in whole cents, rounded half up (by hand: `round` is a library call on
/// baseline x86-64).
fn cents(dollars: f64) -> i64 {
    (dollars * 100.0 + 0.5) as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The formula of the standard generator, with the C library's `exp`.
    fn libm_price(rng: &mut Rng) -> i64 {
        cents(log_price(rng.next_u64()).exp())
    }

    #[test]
    fn prices_are_the_standard_ones() {
        let prices = PriceGenerator::new();
        let mut rng = Rng::new(1);
        let mut reference = rng.clone();
        for _ in 0..1_000_000 {
            assert_eq!(prices.next_price(&mut rng), libm_price(&mut reference));
        }
    }

    #[test]
    fn exp_is_within_an_ulp_of_libm() {
        let prices = PriceGenerator::new();
        let mut rng = Rng::new(2);
        let mut points: Vec<f64> = (0..200_000).map(|_| log_price(rng.next_u64())).collect();
        // The ends of the range and the table's seams.
        points.extend([0.0, 1e-300, 6.0 * LN_10, LN_2 / 256.0, LN_2, 10.0 * LN_2]);
        for x in points {
            let (ours, libm) = (prices.exp(x), x.exp());
            let ulps = ours.to_bits().abs_diff(libm.to_bits());
            assert!(ulps <= 1, "exp({x}) = {ours}, libm {libm}");
        }
    }

    #[test]
    fn prices_span_one_dollar_to_a_million_log_uniformly() {
        let prices = PriceGenerator::new();
        let mut rng = Rng::new(3);
        let mut per_decade = [0u32; 6];
        for _ in 0..60_000 {
            let price = prices.next_price(&mut rng);
            assert!((100..=100_000_000).contains(&price), "{price}");
            let decade = ((price as f64 / 100.0).log10() as usize).min(5);
            per_decade[decade] += 1;
        }
        // 10,000 expected per decade of dollars.
        assert!(
            per_decade.iter().all(|&n| (9_500..10_500).contains(&n)),
            "{per_decade:?}"
        );
    }
}
