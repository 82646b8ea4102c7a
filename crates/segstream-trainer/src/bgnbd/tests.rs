use super::*;

/// The CDNOW summary `scripts/ensure-tools.sh python` fetches (weeks).
fn cdnow() -> Vec<Summary> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../.local/data/cdnow_customers_summary.csv");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}; run scripts/ensure-tools.sh python", path.display()));
    text.lines()
        .skip(1)
        .map(|line| {
            let v: Vec<f64> = line.split(',').skip(1).map(|f| f.parse().expect("a number")).collect();
            Summary { frequency: v[0], recency: v[1], age: v[2] }
        })
        .collect()
}

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
