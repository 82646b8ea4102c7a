use super::*;

const NAMES: [&str; 3] = ["orders_365d", "revenue_365d", "days_since_last_order"];

/// Three planted groups (frequent big spenders, occasional, lapsed one-off
/// buyers) of `n` customers each, with jitter; `shift` moves every value.
fn planted(n: usize, shift: f64) -> Array2<f64> {
    let groups = [[12.0, 900.0, 5.0], [3.0, 150.0, 40.0], [1.0, 30.0, 300.0]];
    let mut rows = Vec::new();
    for i in 0..n {
        for g in &groups {
            // A deterministic jitter of ±10%.
            let j = 1.0 + ((i * 7919 % 101) as f64 / 101.0 - 0.5) * 0.2;
            rows.extend(g.iter().map(|v| v * j * (1.0 + shift)));
        }
    }
    Array2::from_shape_vec((3 * n, 3), rows).expect("shape")
}

fn names() -> Vec<String> {
    NAMES.iter().map(|s| (*s).to_owned()).collect()
}

#[test]
fn planted_groups_are_found_with_k_chosen_by_the_silhouette_and_named_from_their_centres() {
    let data = planted(300, 0.0);
    let fit = Clustering::fit(
        &names(),
        data.view(),
        &ClusterSettings { k_min: 2, k_max: 6, ..Default::default() },
        None,
    )
    .expect("fit");
    assert_eq!(fit.clusters.len(), 3, "{fit:#?}");
    assert!(fit.silhouette > 0.8, "{}", fit.silhouette);
    let mut names: Vec<&str> = fit.clusters.iter().map(|c| c.name.as_str()).collect();
    names.sort_unstable();
    assert_eq!(
        names,
        ["frequent, high value, recent", "lapsed, low value, rare buyers", "typical"],
        "{fit:#?}"
    );
    for c in &fit.clusters {
        assert_eq!(c.population, 300);
        assert!(c.drift.is_none());
    }
    // A new customer goes to the group it resembles.
    let big = fit.assign(&[Some(11.0), Some(1000.0), Some(3.0)]).expect("a cluster");
    assert!(big.name.starts_with("frequent"), "{big:?}");
    // A customer missing a value is placed on the others.
    let lapsed = fit.assign(&[Some(1.0), None, Some(280.0)]).expect("a cluster");
    assert!(lapsed.name.starts_with("lapsed"), "{lapsed:?}");
}

#[test]
fn a_gaussian_mixture_finds_the_planted_groups_assigns_each_customer_to_their_group_and_keeps_ids() {
    let data = planted(300, 0.0);
    let settings = ClusterSettings { algorithm: Algorithm::Gmm, k_min: 2, k_max: 5, ..Default::default() };
    let fit = Clustering::fit(&names(), data.view(), &settings, None).expect("fit");
    assert_eq!(fit.algorithm, Algorithm::Gmm);
    assert_eq!(fit.clusters.len(), 3, "{fit:#?}");
    for c in &fit.clusters {
        assert_eq!(c.population, 300, "{c:?}");
        let g = c.gaussian.as_ref().expect("a mixture component");
        assert!((g.weight - 1.0 / 3.0).abs() < 1e-3 && g.precision.len() == 9, "{g:?}");
    }
    // Every customer of a planted group is assigned to one cluster, its own.
    let mut seen = std::collections::BTreeMap::new();
    for (i, row) in data.rows().into_iter().enumerate() {
        let raw: Vec<Option<f64>> = row.iter().map(|v| Some(*v)).collect();
        let id = fit.assign(&raw).expect("a cluster").id;
        assert_eq!(*seen.entry(i % 3).or_insert(id), id, "row {i}");
    }
    let ids: std::collections::BTreeSet<u32> = seen.values().copied().collect();
    assert_eq!(ids.len(), 3);
    // Retrained on the same data: the same clusters under the same ids.
    let again = Clustering::fit(&names(), data.view(), &settings, Some(&fit)).expect("refit");
    let shape = |c: &Clustering| c.clusters.iter().map(|k| (k.id, k.population)).collect::<Vec<_>>();
    assert_eq!(shape(&fit), shape(&again));
}

#[test]
fn a_mixture_assigns_by_likelihood_where_the_nearest_centre_would_not() {
    // One wide group and one tight group: a point nearer the tight centre but
    // far outside its spread belongs to the wide one.
    let mut rows = Vec::new();
    for i in 0..400 {
        let u = (i * 7919 % 401) as f64 / 401.0 - 0.5;
        let v = (i * 104_729 % 397) as f64 / 397.0 - 0.5;
        rows.extend([100.0 + 80.0 * u, 100.0 + 80.0 * v]);
        rows.extend([10.0 + 1.0 * v, 10.0 + 1.0 * u]);
    }
    let data = Array2::from_shape_vec((800, 2), rows).expect("shape");
    let names = vec!["revenue_365d".to_owned(), "avg_order_value".to_owned()];
    let gmm = ClusterSettings { algorithm: Algorithm::Gmm, k_min: 2, k_max: 2, ..Default::default() };
    let fit = Clustering::fit(&names, data.view(), &gmm, None).expect("fit");
    let kmeans =
        Clustering::fit(&names, data.view(), &ClusterSettings { algorithm: Algorithm::Kmeans, ..gmm }, None)
            .expect("fit");
    let wide = |c: &Clustering| c.assign(&[Some(100.0), Some(100.0)]).expect("a cluster").id;
    let probe = [Some(25.0), Some(25.0)];
    assert_eq!(fit.assign(&probe).map(|c| c.id), Some(wide(&fit)), "{fit:#?}");
    assert_ne!(kmeans.assign(&probe).map(|c| c.id), Some(wide(&kmeans)), "{kmeans:#?}");
}

#[test]
fn retraining_on_the_same_data_gives_the_same_clusters_and_ids() {
    let data = planted(200, 0.0);
    let settings = ClusterSettings::default();
    let first = Clustering::fit(&names(), data.view(), &settings, None).expect("fit");
    let again = Clustering::fit(&names(), data.view(), &settings, Some(&first)).expect("fit");
    assert_eq!(first.clusters.len(), again.clusters.len());
    for (a, b) in first.clusters.iter().zip(&again.clusters) {
        assert_eq!((a.id, &a.name, a.population, &a.centre), (b.id, &b.name, b.population, &b.centre));
        assert!(b.drift.is_some_and(|d| d.centre_moved < 1e-9), "{b:?}");
    }
    assert_eq!(again.next_id, first.next_id);
    assert!(again.vanished.is_empty());
}

#[test]
fn slightly_shifted_data_keeps_the_matched_ids_and_reports_the_drift() {
    let settings = ClusterSettings::default();
    let first = Clustering::fit(&names(), planted(200, 0.0).view(), &settings, None).expect("fit");
    let shifted = Clustering::fit(&names(), planted(200, 0.05).view(), &settings, Some(&first)).expect("fit");
    for c in &first.clusters {
        let same = shifted.clusters.iter().find(|n| n.id == c.id).expect("kept");
        assert_eq!(same.name, c.name);
        let drift = same.drift.expect("matched");
        assert!(drift.centre_moved > 0.0 && drift.centre_moved < 0.2, "{drift:?}");
        assert_eq!(drift.previous_share, c.share);
    }
}

#[test]
fn a_new_group_gets_a_new_id_and_a_vanished_one_is_reported() {
    let settings = ClusterSettings { k_min: 2, k_max: 6, ..Default::default() };
    let first = Clustering::fit(&names(), planted(200, 0.0).view(), &settings, None).expect("fit");
    let lapsed_id = first.clusters.iter().find(|c| c.name.starts_with("lapsed")).expect("lapsed").id;
    // The lapsed group is gone; a group of very frequent small-basket buyers came.
    let mut rows: Vec<f64> =
        planted(200, 0.0).rows().into_iter().filter(|r| r[2] < 200.0).flat_map(|r| r.to_vec()).collect();
    for i in 0..200 {
        let j = 1.0 + ((i * 31 % 17) as f64 / 17.0 - 0.5) * 0.2;
        rows.extend([40.0 * j, 200.0 * j, 2.0 * j]);
    }
    let data = Array2::from_shape_vec((rows.len() / 3, 3), rows).expect("shape");
    let second = Clustering::fit(&names(), data.view(), &settings, Some(&first)).expect("fit");
    assert_eq!(second.vanished, vec![lapsed_id], "{second:#?}");
    let new: Vec<&Cluster> = second.clusters.iter().filter(|c| c.drift.is_none()).collect();
    assert_eq!(new.len(), 1, "{second:#?}");
    assert_eq!(new[0].id, first.next_id);
    assert_eq!(second.next_id, first.next_id + 1);
}

#[test]
fn too_few_customers_identical_customers_and_bad_settings_are_refused() {
    let settings = ClusterSettings::default();
    let few = planted(1, 0.0);
    assert!(matches!(
        Clustering::fit(&names(), few.view(), &settings, None),
        Err(ClusterError::Degenerate(_))
    ));
    let same = Array2::from_elem((100, 3), 2.0);
    let e = Clustering::fit(&names(), same.view(), &settings, None).expect_err("refused");
    assert!(e.to_string().contains("same features"), "{e}");
    let one = ClusterSettings { k_min: 1, ..Default::default() };
    let e = Clustering::fit(&names(), planted(50, 0.0).view(), &one, None).expect_err("refused");
    assert!(e.to_string().contains("k_min"), "{e}");
}

#[test]
fn a_group_that_appears_gets_a_new_id_while_the_others_keep_theirs() {
    let settings = ClusterSettings { k_min: 2, k_max: 6, ..Default::default() };
    // Before: the lapsed one-off buyers are not there yet.
    let rows: Vec<f64> =
        planted(200, 0.0).rows().into_iter().filter(|r| r[2] < 200.0).flat_map(|r| r.to_vec()).collect();
    let two = Array2::from_shape_vec((rows.len() / 3, 3), rows).expect("shape");
    let first = Clustering::fit(&names(), two.view(), &settings, None).expect("fit");
    assert_eq!(first.clusters.len(), 2, "{first:#?}");
    // After: they are; more new centres than previous ones.
    let second = Clustering::fit(&names(), planted(200, 0.0).view(), &settings, Some(&first)).expect("fit");
    assert_eq!(second.clusters.len(), 3, "{second:#?}");
    for c in &first.clusters {
        let kept = second.clusters.iter().find(|n| n.id == c.id).expect("kept");
        // The same group: the same name, though against the new population
        // its centre alone would now read "typical".
        assert_eq!(kept.name, c.name);
        assert!(kept.drift.is_some_and(|d| d.centre_moved < 1e-6), "{kept:?}");
    }
    let new: Vec<&Cluster> = second.clusters.iter().filter(|c| c.drift.is_none()).collect();
    assert_eq!(new.len(), 1);
    assert!(new[0].name.starts_with("lapsed") && new[0].id == first.next_id, "{new:?}");
    assert!(second.vanished.is_empty());
}
