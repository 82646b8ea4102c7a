//! BG/NBD ("beta-geometric / negative binomial distribution"): while alive
//! a customer buys as a Poisson process whose rate is gamma(r, α) over the
//! population; after each purchase they drop out with a probability that is
//! beta(a, b) over the population. Fitted by maximum likelihood on each
//! customer's repeat purchases `x`, the time of the last one `t_x` and the
//! length of observation `T` (Fader, Hardie and Lee, "Counting your
//! customers the easy way", Marketing Science 24(2), 2005, equation 6).

use libm::lgamma;

use crate::optimise::minimise_positive;

/// One customer's purchase history as the model reads it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Summary {
    /// Repeat purchases (all but the first).
    pub frequency: f64,
    /// Time from the first purchase to the last (0 without a repeat).
    pub recency: f64,
    /// Time from the first purchase to the end of observation.
    pub age: f64,
}

/// Fitted parameters.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct BgNbd {
    /// Shape of the gamma over purchase rates.
    pub r: f64,
    /// Scale of the gamma over purchase rates (in the summaries' time unit).
    pub alpha: f64,
    /// Beta over drop-out probabilities, first shape.
    pub a: f64,
    /// Beta over drop-out probabilities, second shape.
    pub b: f64,
}

/// A fit that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum FitError {
    /// Nothing to fit on.
    #[error("no customer to fit the BG/NBD model on")]
    Empty,
    /// A summary is impossible (negative, recency past age, not a number).
    #[error("customer {index}: {problem}")]
    Input {
        /// Position in the input.
        index: usize,
        /// What is wrong.
        problem: String,
    },
    /// The optimiser failed or ended on parameters that are not finite.
    #[error("the BG/NBD fit did not converge: {0}")]
    NoConvergence(String),
}

impl BgNbd {
    /// Log-likelihood of one customer (equation 6, in logs: the sum of the
    /// "still alive at T" and "dropped out after t_x" terms).
    pub fn log_likelihood(&self, s: &Summary) -> f64 {
        let (base, drop) = self.frequency_part(s.frequency);
        base + self.history_part(s, drop)
    }

    /// The parts of the log-likelihood that depend on the number of repeat
    /// purchases only (the gamma functions): computed once per number in a fit.
    fn frequency_part(&self, x: f64) -> (f64, f64) {
        let Self { r, alpha, a, b } = *self;
        let base = lgamma(r + x) - lgamma(r) + r * alpha.ln() + lgamma(a + b) + lgamma(b + x)
            - lgamma(b)
            - lgamma(a + b + x);
        (base, a.ln() - (b + x - 1.0).ln())
    }

    /// The rest, given the frequency part's drop-out term.
    fn history_part(&self, s: &Summary, drop: f64) -> f64 {
        let x = s.frequency;
        let alive = -(self.r + x) * (self.alpha + s.age).ln();
        if x > 0.0 {
            let dropped = drop - (self.r + x) * (self.alpha + s.recency).ln();
            let top = alive.max(dropped);
            top + ((alive - top).exp() + (dropped - top).exp()).ln()
        } else {
            alive
        }
    }

    /// Probability that a customer with this history is still a customer at
    /// the end of observation.
    pub fn p_alive(&self, s: &Summary) -> f64 {
        if s.frequency <= 0.0 {
            return 1.0;
        }
        let Self { r, alpha, a, b } = *self;
        let x = s.frequency;
        let odds = a / (b + x - 1.0) * ((alpha + s.age) / (alpha + s.recency)).powf(r + x);
        1.0 / (1.0 + odds)
    }

    /// Expected number of purchases in the next `horizon` (in the
    /// summaries' time unit) of a customer with this history (equation 10),
    /// or `None` where the formula has no value (a = 1, or the series does
    /// not converge). Its ₂F₁(r+x, b+x; a+b+x−1; z) is taken through Euler's
    /// transformation, which cancels the factor ((α+T)/(α+T+t))^(r+x) in
    /// front of it: the remaining series has bounded terms whatever the
    /// number of purchases, where the plain one overflows past a few hundred.
    pub fn expected_purchases(&self, s: &Summary, horizon: f64) -> Option<f64> {
        let Self { r, alpha, a, b } = *self;
        let x = s.frequency;
        let c = a + b + x - 1.0;
        let z = horizon / (alpha + s.age + horizon);
        let hyp = (1.0 - z).powf(a - 1.0) * gauss_series(a + b - 1.0 - r, a - 1.0, c, z)?;
        let alive_odds = if x > 0.0 {
            a / (b + x - 1.0) * ((alpha + s.age) / (alpha + s.recency)).powf(r + x)
        } else {
            0.0
        };
        let expected = c / (a - 1.0) * (1.0 - hyp) / (1.0 + alive_odds);
        expected.is_finite().then_some(expected.max(0.0))
    }

    /// The maximum-likelihood parameters for `customers`.
    pub fn fit(customers: &[Summary]) -> Result<Self, FitError> {
        if customers.is_empty() {
            return Err(FitError::Empty);
        }
        for (index, s) in customers.iter().enumerate() {
            let bad = |problem: &str| Err(FitError::Input { index, problem: problem.to_owned() });
            if ![s.frequency, s.recency, s.age].iter().all(|v| v.is_finite() && *v >= 0.0) {
                return bad("frequency, recency and age must be finite and not negative");
            }
            if s.recency > s.age {
                return bad("the last purchase is after the end of observation (recency > age)");
            }
        }
        // Equal histories have equal likelihoods: each distinct one is
        // computed once, weighted by how many customers share it (summaries
        // in whole days collapse a million customers to far fewer).
        let mut distinct: Vec<Summary> = customers.to_vec();
        distinct.sort_by(|x, y| {
            (x.frequency, x.recency, x.age)
                .partial_cmp(&(y.frequency, y.recency, y.age))
                .unwrap_or(std::cmp::Ordering::Equal)
        });
        let mut weighted: Vec<(Summary, f64)> = Vec::new();
        for s in distinct {
            match weighted.last_mut() {
                Some((last, n)) if *last == s => *n += 1.0,
                _ => weighted.push((s, 1.0)),
            }
        }
        let total = customers.len() as f64;
        let params = minimise_positive(4, |p| {
            let model = Self { r: p[0], alpha: p[1], a: p[2], b: p[3] };
            let sum: f64 = weighted
                .chunk_by(|x, y| x.0.frequency == y.0.frequency)
                .map(|same| {
                    let (base, drop) = model.frequency_part(same[0].0.frequency);
                    same.iter().map(|(s, n)| n * (base + model.history_part(s, drop))).sum::<f64>()
                })
                .sum();
            -sum / total
        })
        .map_err(FitError::NoConvergence)?;
        Ok(Self { r: params[0], alpha: params[1], a: params[2], b: params[3] })
    }
}

/// Gauss's hypergeometric series ₂F₁(a, b; c; z) for 0 ≤ z < 1, summed
/// until a term no longer changes the sum; `None` if a denominator is zero
/// or it has not converged within 100,000 terms.
fn gauss_series(a: f64, b: f64, c: f64, z: f64) -> Option<f64> {
    if !(0.0..1.0).contains(&z) {
        return None;
    }
    let (mut term, mut sum) = (1.0_f64, 1.0_f64);
    for n in 0..100_000 {
        let n = f64::from(n);
        if c + n == 0.0 {
            return None;
        }
        term *= (a + n) * (b + n) / ((c + n) * (n + 1.0)) * z;
        sum += term;
        if term.abs() <= f64::EPSILON * sum.abs() {
            return sum.is_finite().then_some(sum);
        }
    }
    None
}

#[cfg(test)]
mod tests;
