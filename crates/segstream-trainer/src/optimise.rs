//! Maximum likelihood over positive parameters with argmin's Nelder-Mead:
//! the shared part of every fit in this crate.

use argmin::core::{CostFunction, Executor, State, TerminationReason, TerminationStatus};
use argmin::solver::neldermead::NelderMead;

/// Largest |log| of a parameter searched.
const LOG_BOUND: f64 = 15.0;

/// The positive parameters (as many as `dimensions`) that minimise `cost`,
/// searched as their logarithms from 1.0 each, or why none was found. A
/// cost that is not finite counts as worse than every finite one (the
/// model's formulas overflow far from the optimum).
pub(crate) fn minimise_positive(dimensions: usize, cost: impl Fn(&[f64]) -> f64) -> Result<Vec<f64>, String> {
    // A unit simplex around log 1 = 0.
    let start: Vec<Vec<f64>> = std::iter::once(vec![0.0; dimensions])
        .chain((0..dimensions).map(|i| (0..dimensions).map(|j| if i == j { 1.0 } else { 0.0 }).collect()))
        .collect();
    let solver = NelderMead::new(start).with_sd_tolerance(1e-10).map_err(|e| e.to_string())?;
    let result = Executor::new(LogCost { dimensions, cost }, solver)
        .configure(|state| state.max_iters(5_000))
        .run()
        .map_err(|e| e.to_string())?;
    let state = result.state();
    if let TerminationStatus::Terminated(TerminationReason::MaxItersReached) = state.get_termination_status()
    {
        return Err(format!(
            "no optimum within {} iterations (best cost {})",
            state.get_iter(),
            state.get_best_cost()
        ));
    }
    let best = state.get_best_param().cloned().unwrap_or_default();
    let params: Vec<f64> = best.iter().map(|p| p.exp()).collect();
    if params.len() != dimensions || !params.iter().all(|v| v.is_finite() && *v > 0.0) {
        return Err(format!("parameters not finite: {params:?}"));
    }
    Ok(params)
}

/// `cost` of the exponentials of argmin's parameters.
struct LogCost<F> {
    dimensions: usize,
    cost: F,
}

impl<F: Fn(&[f64]) -> f64> CostFunction for LogCost<F> {
    type Param = Vec<f64>;
    type Output = f64;

    fn cost(&self, p: &Self::Param) -> Result<f64, argmin::core::Error> {
        if p.len() != self.dimensions {
            return Err(argmin::core::Error::msg(format!("{} parameters expected", self.dimensions)));
        }
        // A likelihood that keeps rising towards infinity along some
        // direction (a spend model of customers whose orders barely vary
        // sends p to infinity) would walk away for ever: beyond e^±15 the
        // cost is a wall, and the fit ends on it.
        if p.iter().any(|v| v.abs() > LOG_BOUND) {
            return Ok(f64::MAX);
        }
        let positive: Vec<f64> = p.iter().map(|v| v.exp()).collect();
        let cost = (self.cost)(&positive);
        Ok(if cost.is_finite() { cost } else { f64::MAX })
    }
}
