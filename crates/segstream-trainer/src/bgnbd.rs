//! BG/NBD ("beta-geometric / negative binomial distribution"): while alive
//! a customer buys as a Poisson process whose rate is gamma(r, α) over the
//! population; after each purchase they drop out with a probability that is
//! beta(a, b) over the population. Fitted by maximum likelihood on each
//! customer's repeat purchases `x`, the time of the last one `t_x` and the
//! length of observation `T` (Fader, Hardie and Lee, "Counting your
//! customers the easy way", Marketing Science 24(2), 2005, equation 6).

use argmin::core::{CostFunction, Executor, State};
use argmin::solver::neldermead::NelderMead;
use libm::lgamma;

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
#[derive(Clone, Copy, Debug, PartialEq)]
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
        let Self { r, alpha, a, b } = *self;
        let x = s.frequency;
        let a1 = lgamma(r + x) - lgamma(r) + r * alpha.ln();
        let a2 = lgamma(a + b) + lgamma(b + x) - lgamma(b) - lgamma(a + b + x);
        let alive = -(r + x) * (alpha + s.age).ln();
        if x > 0.0 {
            let dropped = a.ln() - (b + x - 1.0).ln() - (r + x) * (alpha + s.recency).ln();
            let top = alive.max(dropped);
            a1 + a2 + top + ((alive - top).exp() + (dropped - top).exp()).ln()
        } else {
            a1 + a2 + alive
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
        // The parameters are positive: searched as their logarithms.
        let start = vec![
            vec![0.0; 4],
            vec![1.0, 0.0, 0.0, 0.0],
            vec![0.0, 1.0, 0.0, 0.0],
            vec![0.0, 0.0, 1.0, 0.0],
            vec![0.0, 0.0, 0.0, 1.0],
        ];
        let solver = NelderMead::new(start)
            .with_sd_tolerance(1e-10)
            .map_err(|e| FitError::NoConvergence(e.to_string()))?;
        let result = Executor::new(NegLogLikelihood { customers }, solver)
            .configure(|state| state.max_iters(5_000))
            .run()
            .map_err(|e| FitError::NoConvergence(e.to_string()))?;
        let best = result.state().get_best_param().cloned().unwrap_or_default();
        let [r, alpha, a, b] = best.as_slice() else {
            return Err(FitError::NoConvergence("no parameters".into()));
        };
        let fitted = Self { r: r.exp(), alpha: alpha.exp(), a: a.exp(), b: b.exp() };
        if ![fitted.r, fitted.alpha, fitted.a, fitted.b].iter().all(|v| v.is_finite() && *v > 0.0) {
            return Err(FitError::NoConvergence(format!("parameters not finite: {fitted:?}")));
        }
        Ok(fitted)
    }
}

/// The mean negative log-likelihood over the customers, of log-parameters.
struct NegLogLikelihood<'a> {
    customers: &'a [Summary],
}

impl CostFunction for NegLogLikelihood<'_> {
    type Param = Vec<f64>;
    type Output = f64;

    fn cost(&self, p: &Self::Param) -> Result<f64, argmin::core::Error> {
        let [r, alpha, a, b] = p.as_slice() else {
            return Err(argmin::core::Error::msg("four parameters expected"));
        };
        let model = BgNbd { r: r.exp(), alpha: alpha.exp(), a: a.exp(), b: b.exp() };
        let total: f64 = self.customers.iter().map(|s| model.log_likelihood(s)).sum();
        let cost = -total / self.customers.len() as f64;
        // Out of the model's domain (overflow): worse than anything valid.
        Ok(if cost.is_finite() { cost } else { f64::MAX })
    }
}

#[cfg(test)]
mod tests;
