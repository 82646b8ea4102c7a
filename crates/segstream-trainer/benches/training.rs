//! Training at scale: the BG/NBD fit and k-means on a million customers,
//! and the per-customer scoring a worker does per event. Run with
//! `make bench`; `cargo test --all-targets` runs it unoptimised on a small
//! population as a smoke test.
//!
//! The purchase histories are drawn from a BG/NBD process with known
//! parameters (so the fit is also checked at scale); the clustering
//! features are ten columns of six planted groups with log-normal noise.

#![allow(missing_docs, clippy::unwrap_used)]

use std::time::Instant;

use ndarray::Array2;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Beta, Distribution, Exp, Gamma, Normal};
use segstream_trainer::{
    Algorithm, BgNbd, ClusterSettings, Clustering, GammaGamma, ScoreInputs, SegmentModel, Summary,
};

/// The process the histories are drawn from (days).
const TRUE: BgNbd = BgNbd { r: 0.25, alpha: 30.0, a: 0.8, b: 2.5 };

/// A customer observed for up to two years after their first purchase, in whole days.
fn history(rng: &mut ChaCha8Rng) -> Summary {
    let rate = Gamma::new(TRUE.r, 1.0 / TRUE.alpha).unwrap().sample(rng);
    let drop = Beta::new(TRUE.a, TRUE.b).unwrap().sample(rng);
    let age = rng.random_range(30.0..730.0_f64).round();
    let (mut t, mut last, mut repeats) = (0.0, 0.0, 0.0);
    if rate > 0.0 {
        let gap = Exp::new(rate).unwrap();
        // After each repeat purchase the customer drops out with probability `drop`.
        loop {
            t += gap.sample(rng);
            if t > age {
                break;
            }
            last = t;
            repeats += 1.0;
            if rng.random::<f64>() < drop {
                break;
            }
        }
    }
    Summary { frequency: repeats, recency: last.round().min(age), age }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let default = if cfg!(debug_assertions) { 20_000 } else { 1_000_000 };
    let n: usize = std::env::var("BENCH_CUSTOMERS").ok().and_then(|v| v.parse().ok()).unwrap_or(default);
    let runs = if cfg!(debug_assertions) { 1 } else { 3 };
    let mut rng = ChaCha8Rng::seed_from_u64(19);

    let histories: Vec<Summary> = (0..n).map(|_| history(&mut rng)).collect();
    let distinct = {
        let mut d: Vec<(u64, u64, u64)> =
            histories.iter().map(|s| (s.frequency.to_bits(), s.recency.to_bits(), s.age.to_bits())).collect();
        d.sort_unstable();
        d.dedup();
        d.len()
    };
    let mut times = Vec::new();
    let mut fit = TRUE;
    for _ in 0..runs {
        let start = Instant::now();
        fit = BgNbd::fit(&histories).unwrap();
        times.push(start.elapsed().as_secs_f64());
    }
    println!(
        "BG/NBD fit, {n} customers ({distinct} distinct histories): median {:.2} s of {runs} (target 10 s); \
         r {:.3} alpha {:.2} a {:.3} b {:.3} (drawn from r {} alpha {} a {} b {})",
        median(times),
        fit.r,
        fit.alpha,
        fit.a,
        fit.b,
        TRUE.r,
        TRUE.alpha,
        TRUE.a,
        TRUE.b
    );

    // Counts and money: each group's value of a feature is a power of four
    // times log-normal noise (the trainer clusters on ln(1 + v)).
    let centres: Vec<[f64; 10]> =
        (0..6).map(|g| std::array::from_fn(|j| 4f64.powi(((g * 7 + j * 3) % 11) as i32))).collect();
    let noise = Normal::new(0.0, 0.15).unwrap();
    let values: Vec<f64> = (0..n)
        .flat_map(|i| {
            let centre = centres[i % centres.len()];
            centre.map(|c| c * f64::exp(noise.sample(&mut rng)))
        })
        .collect();
    let data = Array2::from_shape_vec((n, 10), values).unwrap();
    let names: Vec<String> = (0..10).map(|j| format!("feature_{j}")).collect();
    let settings = ClusterSettings::default();
    let mut times = Vec::new();
    let mut clustering = None;
    for _ in 0..runs {
        let start = Instant::now();
        clustering = Some(Clustering::fit(&names, data.view(), &settings, clustering.as_ref()).unwrap());
        times.push(start.elapsed().as_secs_f64());
    }
    let clustering = clustering.unwrap();
    println!(
        "k-means, {n} customers x 10 features, k {}..{} chosen on {} by the silhouette of {}: median {:.2} s of {runs} (target 30 s); k = {}, silhouette {:.3} (tried {:?})",
        settings.k_min,
        settings.k_max,
        settings.sample,
        settings.silhouette_sample,
        median(times),
        clustering.clusters.len(),
        clustering.silhouette,
        clustering.tried.iter().map(|t| (t.k, (t.silhouette * 1000.0).round() / 1000.0)).collect::<Vec<_>>()
    );
    // The Gaussian mixture option on the same data (one run: its EM passes
    // over every customer cost k × features² each).
    let gmm = ClusterSettings { algorithm: Algorithm::Gmm, ..settings.clone() };
    let start = Instant::now();
    let mixture = Clustering::fit(&names, data.view(), &gmm, None).unwrap();
    println!(
        "Gaussian mixture (trainer.algorithm = \"gmm\"), the same customers and k range: {:.2} s (one run); k = {}, silhouette {:.3}",
        start.elapsed().as_secs_f64(),
        mixture.clusters.len(),
        mixture.silhouette
    );

    let model = SegmentModel {
        version: 1,
        group_id: "bench".into(),
        trained_at: 0,
        data_as_of: 0,
        source: "bench".into(),
        customers: n as i64,
        buyers: n as i64,
        repeat_buyers: 0,
        training_ms: 0,
        purchase: Some(fit),
        spend: Some(GammaGamma { p: 6.25, q: 3.74, gamma: 15.44 }),
        expected_horizon_days: 90.0,
        clv_horizon_days: 365.0,
        rfm: None,
        clusters: Some(clustering),
    };
    let rows: Vec<Vec<Option<f64>>> =
        data.rows().into_iter().take(10_000).map(|r| r.iter().map(|v| Some(*v)).collect()).collect();
    let start = Instant::now();
    let mut checksum = 0.0;
    let rounds = 20;
    for _ in 0..rounds {
        for (row, s) in rows.iter().zip(&histories) {
            let inputs = ScoreInputs {
                lifetime_orders: s.frequency as u32 + 1,
                tenure_days: Some(s.age),
                days_since_last_order: Some(s.age - s.recency),
                avg_order_value: Some(42.0),
                cluster_values: row,
            };
            let scores = model.score(&inputs);
            checksum += scores.p_alive.unwrap_or_default() + scores.clv.unwrap_or_default();
        }
    }
    let per = start.elapsed().as_secs_f64() / (rounds * rows.len()) as f64;
    println!(
        "scoring one customer (P(alive), expected orders, CLV, nearest of {} clusters): {:.2} µs (checksum {checksum:.0})",
        model.clusters.as_ref().map_or(0, |c| c.clusters.len()),
        per * 1e6
    );
}
