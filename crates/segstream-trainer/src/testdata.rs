//! The CDNOW data the fits are checked on, and the independent
//! computations in Python (mpmath) the per-customer figures are checked
//! against.

use crate::bgnbd::Summary;

/// A file `scripts/ensure-tools.sh python` fetches into `.local/data`.
fn data_file(name: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.local/data").join(name);
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}; run scripts/ensure-tools.sh python", path.display()))
}

/// The numbers of each line of a CSV with a header, the first column dropped.
fn rows(text: &str) -> Vec<Vec<f64>> {
    text.lines()
        .skip(1)
        .map(|line| line.split(',').skip(1).map(|f| f.parse().expect("a number")).collect())
        .collect()
}

/// The CDNOW summary (weeks): 2,357 customers.
pub(crate) fn cdnow() -> Vec<Summary> {
    rows(&data_file("cdnow_customers_summary.csv"))
        .into_iter()
        .map(|v| Summary { frequency: v[0], recency: v[1], age: v[2] })
        .collect()
}

/// The CDNOW summary with each customer's average repeat spend (dollars).
pub(crate) fn cdnow_with_spend() -> Vec<(Summary, f64)> {
    rows(&data_file("cdnow_customers_summary_with_transactions.csv"))
        .into_iter()
        .map(|v| (Summary { frequency: v[0], recency: v[1], age: v[2] }, v[3]))
        .collect()
}

/// Runs `script` with the test venv's Python (`SEGSTREAM_PYTHON` if set);
/// returns what it printed, one line per value.
pub(crate) fn python(script: &str) -> Vec<f64> {
    let python = std::env::var("SEGSTREAM_PYTHON")
        .unwrap_or_else(|_| format!("{}/../../.local/venv/bin/python", env!("CARGO_MANIFEST_DIR")));
    let out = std::process::Command::new(&python)
        .args(["-c", script])
        .output()
        .unwrap_or_else(|e| panic!("{python}: {e}; run scripts/ensure-tools.sh python"));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).lines().map(|l| l.trim().parse().expect("a number")).collect()
}
