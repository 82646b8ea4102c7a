use super::*;
use crate::testdata::{cdnow, python};

#[test]
fn the_fit_on_cdnow_lands_within_one_percent_of_the_published_estimates() {
    let customers = cdnow();
    assert_eq!(customers.len(), 2_357);
    let fit = BgNbd::fit(&customers).expect("fit");
    // Fader, Hardie and Lee (2005), table 1.
    let published =
        [("r", fit.r, 0.243), ("alpha", fit.alpha, 4.414), ("a", fit.a, 0.793), ("b", fit.b, 2.426)];
    for (name, got, want) in published {
        assert!(((got - want) / want).abs() < 0.01, "{name} = {got}, published {want}: {fit:?}");
    }
    // Their log-likelihood at the optimum: -9582.4.
    let ll: f64 = customers.iter().map(|s| fit.log_likelihood(s)).sum();
    assert!((ll - -9582.4).abs() < 1.0, "log-likelihood {ll}");
}

#[test]
fn p_alive_is_one_without_a_repeat_and_falls_with_the_silence_since_the_last_purchase() {
    let model = BgNbd { r: 0.243, alpha: 4.414, a: 0.793, b: 2.426 };
    assert_eq!(model.p_alive(&Summary { frequency: 0.0, recency: 0.0, age: 38.0 }), 1.0);
    let at = |recency| model.p_alive(&Summary { frequency: 4.0, recency, age: 38.0 });
    assert!(at(37.0) > at(20.0) && at(20.0) > at(5.0), "{} {} {}", at(37.0), at(20.0), at(5.0));
    // Equation 13 of the paper written out for x = 4, t_x = 20, T = 38.
    let odds = 0.793 / (2.426 + 3.0) * ((4.414_f64 + 38.0) / (4.414 + 20.0)).powf(0.243 + 4.0);
    assert!((at(20.0) - 1.0 / (1.0 + odds)).abs() < 1e-12);
}

#[test]
fn impossible_summaries_and_an_empty_population_are_refused() {
    assert!(matches!(BgNbd::fit(&[]), Err(FitError::Empty)));
    let late = Summary { frequency: 1.0, recency: 5.0, age: 4.0 };
    let e = BgNbd::fit(&[late]).expect_err("refused").to_string();
    assert!(e.contains("customer 0") && e.contains("recency > age"), "{e}");
}

/// The published CDNOW estimates (weeks).
const CDNOW: BgNbd = BgNbd { r: 0.243, alpha: 4.414, a: 0.793, b: 2.426 };

#[test]
fn p_alive_and_expected_purchases_of_cdnow_customers_match_an_independent_computation() {
    let customers = cdnow();
    // The first customers, and the heaviest buyers (where a plain ₂F₁ series overflows).
    let mut picked: Vec<Summary> = customers[..6].to_vec();
    let mut heavy = customers.clone();
    heavy.sort_by(|a, b| b.frequency.total_cmp(&a.frequency));
    picked.extend(&heavy[..3]);
    for horizon in [10.0, 39.0, 52.0] {
        // Equations 10 and 13 of the paper as they are written, with mpmath's
        // ₂F₁ at 50 digits.
        let script = format!(
            "from mpmath import mp, mpf, hyp2f1\nmp.dps = 50\nr, al, a, b, t = mpf('{}'), mpf('{}'), mpf('{}'), mpf('{}'), mpf('{horizon}')\n{}",
            CDNOW.r,
            CDNOW.alpha,
            CDNOW.a,
            CDNOW.b,
            picked
                .iter()
                .map(|s| format!(
                    "x, tx, T = mpf('{}'), mpf('{}'), mpf('{}')\n\
                     odds = (a / (b + x - 1) * ((al + T) / (al + tx)) ** (r + x)) if x > 0 else 0\n\
                     print(1 / (1 + odds))\n\
                     f = 1 - ((al + T) / (al + T + t)) ** (r + x) * hyp2f1(r + x, b + x, a + b + x - 1, t / (al + T + t))\n\
                     print((a + b + x - 1) / (a - 1) * f / (1 + odds))\n",
                    s.frequency, s.recency, s.age
                ))
                .collect::<String>()
        );
        let want = python(&script);
        assert_eq!(want.len(), 2 * picked.len());
        for (s, pair) in picked.iter().zip(want.chunks(2)) {
            let alive = CDNOW.p_alive(s);
            let expected = CDNOW.expected_purchases(s, horizon).expect("a value");
            assert!((alive - pair[0]).abs() < 1e-12, "{s:?}: P(alive) {alive}, independently {}", pair[0]);
            assert!(
                (expected - pair[1]).abs() < 1e-9 * pair[1].max(1.0),
                "{s:?} over {horizon} weeks: {expected}, independently {}",
                pair[1]
            );
        }
    }
}

#[test]
fn expected_purchases_grow_with_the_horizon_and_fall_with_the_silence() {
    let s = |recency| Summary { frequency: 5.0, recency, age: 38.0 };
    let e = |s: Summary, t| CDNOW.expected_purchases(&s, t).expect("a value");
    assert_eq!(e(s(30.0), 0.0), 0.0);
    assert!(e(s(30.0), 10.0) < e(s(30.0), 20.0));
    assert!(e(s(37.0), 10.0) > e(s(10.0), 10.0));
    // A hundred times the heaviest CDNOW buyer still has a finite figure.
    assert!(e(Summary { frequency: 3_000.0, recency: 38.0, age: 38.0 }, 52.0).is_finite());
}
