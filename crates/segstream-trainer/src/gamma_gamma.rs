//! Gamma–Gamma model of spend per order: a customer's orders are gamma(p, ν)
//! around their own mean, and ν is gamma(q, γ) over the population, so a
//! customer's expected spend shrinks their observed average towards the
//! population's by how many orders it rests on. Fitted by maximum likelihood
//! on repeat buyers only (Fader, Hardie and Lee, "RFM and CLV: using iso-value
//! curves for customer base analysis", 2005; Fader and Hardie, "The
//! Gamma-Gamma model of monetary value", 2013, equation 3).

use libm::lgamma;

use crate::bgnbd::{BgNbd, Summary};
use crate::optimise::minimise_positive;

/// One repeat buyer's spend as the model reads it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Spend {
    /// Purchases the average is over (at least 1): the repeat purchases in
    /// the paper's data; all net orders where the average is over all.
    pub frequency: f64,
    /// Average value of those purchases.
    pub average: f64,
}

/// Fitted parameters.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct GammaGamma {
    /// Shape of the gamma of one order's value around the customer's mean.
    pub p: f64,
    /// Shape of the gamma over the population of customers' scales.
    pub q: f64,
    /// Scale of the gamma over the population of customers' scales.
    pub gamma: f64,
}

/// A Gamma–Gamma fit that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SpendFitError {
    /// No repeat buyer to fit on.
    #[error("no repeat buyer to fit the Gamma-Gamma spend model on")]
    Empty,
    /// A buyer's spend is impossible.
    #[error("repeat buyer {index}: {problem}")]
    Input {
        /// Position in the input.
        index: usize,
        /// What is wrong.
        problem: String,
    },
    /// The optimiser failed, or the population's mean spend is infinite
    /// (q ≤ 1): the model does not describe these customers.
    #[error("the Gamma-Gamma fit did not converge: {0}")]
    NoConvergence(String),
}

impl GammaGamma {
    /// Log-likelihood of one repeat buyer (equation 3 in logs).
    pub fn log_likelihood(&self, s: &Spend) -> f64 {
        let Self { p, q, gamma } = *self;
        let (x, m) = (s.frequency, s.average);
        lgamma(p * x + q) - lgamma(p * x) - lgamma(q)
            + q * gamma.ln()
            + (p * x - 1.0) * m.ln()
            + p * x * x.ln()
            - (p * x + q) * (gamma + m * x).ln()
    }

    /// Expected value of this customer's next order: the population's mean
    /// `pγ/(q−1)` and their own average weighted by how many orders it rests
    /// on. A customer without a repeat gets the population's mean.
    pub fn expected_spend(&self, s: &Spend) -> f64 {
        let Self { p, q, gamma } = *self;
        if s.frequency <= 0.0 {
            return p * gamma / (q - 1.0);
        }
        p * (gamma + s.frequency * s.average) / (p * s.frequency + q - 1.0)
    }

    /// Customer lifetime value over `horizon`: expected purchases there
    /// (BG/NBD) times the expected value of each (undiscounted: the horizons
    /// segments use are months, where discounting changes little and would
    /// add a rate to configure).
    pub fn lifetime_value(
        &self,
        bgnbd: &BgNbd,
        purchases: &Summary,
        spend: &Spend,
        horizon: f64,
    ) -> Option<f64> {
        Some(bgnbd.expected_purchases(purchases, horizon)? * self.expected_spend(spend))
    }

    /// The maximum-likelihood parameters for `buyers` (repeat buyers only:
    /// the model has nothing to learn from a single order's value).
    pub fn fit(buyers: &[Spend]) -> Result<Self, SpendFitError> {
        if buyers.is_empty() {
            return Err(SpendFitError::Empty);
        }
        for (index, s) in buyers.iter().enumerate() {
            let bad = |problem: &str| Err(SpendFitError::Input { index, problem: problem.to_owned() });
            if !(s.frequency.is_finite() && s.frequency >= 1.0) {
                return bad("the average must be over at least one purchase");
            }
            if !(s.average.is_finite() && s.average > 0.0) {
                return bad("the average spend must be a positive number");
            }
        }
        let params = minimise_positive(3, |p| {
            let model = Self { p: p[0], q: p[1], gamma: p[2] };
            -buyers.iter().map(|s| model.log_likelihood(s)).sum::<f64>() / buyers.len() as f64
        })
        .map_err(SpendFitError::NoConvergence)?;
        let fitted = Self { p: params[0], q: params[1], gamma: params[2] };
        if fitted.q <= 1.0 {
            return Err(SpendFitError::NoConvergence(format!(
                "q = {} ≤ 1 gives an infinite mean spend: order values this spread need more repeat buyers, or the feature table's avg_order_value is wrong",
                fitted.q
            )));
        }
        Ok(fitted)
    }
}

#[cfg(test)]
mod tests;
