use super::*;
use crate::testdata::cdnow_with_spend;

#[test]
fn the_fit_on_cdnow_repeat_buyers_lands_within_one_percent_of_the_published_estimates() {
    let buyers: Vec<Spend> = cdnow_with_spend()
        .into_iter()
        .filter(|(s, _)| s.frequency > 0.0)
        .map(|(s, average)| Spend { frequency: s.frequency, average })
        .collect();
    assert_eq!(buyers.len(), 946);
    let fit = GammaGamma::fit(&buyers).expect("fit");
    // Fader and Hardie, "The Gamma-Gamma model of monetary value" (2013).
    for (name, got, want) in [("p", fit.p, 6.25), ("q", fit.q, 3.74), ("gamma", fit.gamma, 15.44)] {
        assert!(((got - want) / want).abs() < 0.01, "{name} = {got}, published {want}: {fit:?}");
    }
    // The population's mean spend pγ/(q−1) (about $35), and a customer's
    // expectation as the weighted mean of it and their own average
    // (equation 5 written the other way).
    let population = fit.expected_spend(&Spend { frequency: 0.0, average: 0.0 });
    assert!((population - 35.2).abs() < 0.5, "{population}");
    let one = fit.expected_spend(&Spend { frequency: 2.0, average: 22.35 });
    let by_hand = (fit.q - 1.0) / (fit.p * 2.0 + fit.q - 1.0) * population
        + fit.p * 2.0 / (fit.p * 2.0 + fit.q - 1.0) * 22.35;
    assert!((one - by_hand).abs() < 1e-9 && one > 22.35 && one < population, "{one} {by_hand}");
}

#[test]
fn a_buyer_without_a_repeat_or_with_an_impossible_spend_is_refused() {
    assert!(matches!(GammaGamma::fit(&[]), Err(SpendFitError::Empty)));
    let e = GammaGamma::fit(&[Spend { frequency: 0.0, average: 10.0 }]).expect_err("refused").to_string();
    assert!(e.contains("repeat buyer 0"), "{e}");
    let e = GammaGamma::fit(&[Spend { frequency: 2.0, average: -1.0 }]).expect_err("refused").to_string();
    assert!(e.contains("positive"), "{e}");
}

#[test]
fn lifetime_value_is_expected_purchases_times_expected_spend() {
    let bgnbd = BgNbd { r: 0.243, alpha: 4.414, a: 0.793, b: 2.426 };
    let gg = GammaGamma { p: 6.25, q: 3.74, gamma: 15.44 };
    let history = Summary { frequency: 2.0, recency: 30.43, age: 38.86 };
    let spend = Spend { frequency: 2.0, average: 22.35 };
    let clv = gg.lifetime_value(&bgnbd, &history, &spend, 52.0).expect("a value");
    let parts = bgnbd.expected_purchases(&history, 52.0).expect("a value") * gg.expected_spend(&spend);
    assert!((clv - parts).abs() < 1e-12 && clv > 0.0);
}
