//! Customer clusters: k-means or a Gaussian mixture (linfa) on scaled
//! features, k chosen by the silhouette, each cluster named from its centre
//! in a marketer's words, and ids kept from one model to the next by an
//! optimal assignment of the new centres to the previous ones (Hungarian
//! algorithm, `pathfinding`).

use linfa::prelude::*;
use linfa_clustering::{GaussianMixtureModel, KMeans};
use linfa_linalg::cholesky::Cholesky;
use linfa_nn::distance::L2Dist;
use ndarray::{Array1, Array2, ArrayView1, ArrayView2, Axis};
use pathfinding::prelude::{Matrix, kuhn_munkres};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// The clustering algorithm.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Algorithm {
    /// k-means: a customer belongs to the nearest centre.
    #[default]
    Kmeans,
    /// A Gaussian mixture with full covariances (EM, initialised by
    /// k-means): a customer belongs to the component with the highest
    /// weighted likelihood, so clusters may differ in spread and shape.
    Gmm,
}

/// How clusters are fitted.
#[derive(Clone, Debug, PartialEq)]
pub struct ClusterSettings {
    /// k-means or a Gaussian mixture.
    pub algorithm: Algorithm,
    /// Fewest clusters tried (at least 2).
    pub k_min: usize,
    /// Most clusters tried.
    pub k_max: usize,
    /// Customers k is chosen on (a seeded random sample): each k
    /// is fitted on them and scored by the silhouette of a sub-sample.
    pub sample: usize,
    /// Customers the silhouette is computed on (it costs their square).
    pub silhouette_sample: usize,
    /// Largest distance (in standard deviations) at which a new centre
    /// still counts as the previous model's cluster.
    pub match_distance: f64,
}

impl Default for ClusterSettings {
    fn default() -> Self {
        Self {
            algorithm: Algorithm::Kmeans,
            k_min: 3,
            k_max: 8,
            sample: 20_000,
            silhouette_sample: 2_000,
            match_distance: 1.0,
        }
    }
}

/// How one raw feature becomes a clustering coordinate: `ln(1 + v)` when
/// `log` (a column with no negative value: counts, money, days and shares
/// alike; they are mostly skewed), then standardised; a missing value
/// becomes the mean.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScaledFeature {
    /// Feature table column.
    pub name: String,
    /// Whether `ln(1 + v)` is taken first.
    pub log: bool,
    /// Mean of the (logged) values.
    pub mean: f64,
    /// Standard deviation of the (logged) values (1 if they were all equal).
    pub std: f64,
}

impl ScaledFeature {
    /// The coordinate of a raw value.
    pub fn scale(&self, raw: Option<f64>) -> f64 {
        match raw.filter(|v| v.is_finite()) {
            Some(v) => (self.transform(v) - self.mean) / self.std,
            None => 0.0,
        }
    }

    /// The raw value at a coordinate.
    pub fn unscale(&self, z: f64) -> f64 {
        let t = z * self.std + self.mean;
        if self.log { t.exp_m1() } else { t }
    }

    fn transform(&self, v: f64) -> f64 {
        if self.log { v.max(0.0).ln_1p() } else { v }
    }
}

/// One cluster of a model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Cluster {
    /// Stable id: the same group of customers keeps it across retrains.
    pub id: u32,
    /// Words a marketer reads, from the centre ("frequent, high value")
    /// against the population it was first fitted on; kept with the id.
    pub name: String,
    /// Centre in the model's scaled coordinates.
    pub centre: Vec<f64>,
    /// Centre in raw feature units, for people.
    pub centre_raw: Vec<f64>,
    /// Customers in it when fitted.
    pub population: i64,
    /// Share of the clustered customers.
    pub share: f64,
    /// Drift from the previous model's cluster with this id: how far the
    /// centre moved (standard deviations of this model) and the share it had;
    /// `None` for a new cluster.
    pub drift: Option<Drift>,
    /// The mixture component's shape (a Gaussian mixture only).
    #[serde(default)]
    pub gaussian: Option<Gaussian>,
}

/// A Gaussian mixture component beyond its centre (the mean).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Gaussian {
    /// Mixing weight.
    pub weight: f64,
    /// Inverse of the covariance, row-major, in scaled coordinates.
    pub precision: Vec<f64>,
    /// Natural log of the covariance's determinant.
    pub log_det_covariance: f64,
}

impl Gaussian {
    /// Log of the weighted density at `point` up to a constant shared by
    /// every component: ln w − ½ ln|Σ| − ½ (x − μ)ᵀ Σ⁻¹ (x − μ).
    fn log_score(&self, centre: &[f64], point: &[f64]) -> f64 {
        let d = point.len();
        let diff: Vec<f64> = point.iter().zip(centre).map(|(x, m)| x - m).collect();
        let quadratic: f64 = self
            .precision
            .chunks(d.max(1))
            .zip(&diff)
            .map(|(row, di)| di * row.iter().zip(&diff).map(|(p, dj)| p * dj).sum::<f64>())
            .sum();
        self.weight.ln() - 0.5 * self.log_det_covariance - 0.5 * quadratic
    }
}

/// The silhouette one k got.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct KScore {
    /// Clusters.
    pub k: i32,
    /// Mean silhouette on the scoring sample.
    pub silhouette: f64,
}

/// A matched cluster's change since the previous model.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Drift {
    /// Distance between the previous and the new centre, in standard deviations.
    pub centre_moved: f64,
    /// Share of the population the cluster had in the previous model.
    pub previous_share: f64,
}

/// Fitted clusters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Clustering {
    /// How they were fitted, and so how a customer is assigned.
    #[serde(default)]
    pub algorithm: Algorithm,
    /// The features, in coordinate order, with their scaling.
    pub features: Vec<ScaledFeature>,
    /// The clusters, by id.
    pub clusters: Vec<Cluster>,
    /// Mean silhouette of the chosen k on the scoring sample (−1 to 1).
    pub silhouette: f64,
    /// The silhouette of every k tried: the criterion k was chosen by.
    pub tried: Vec<KScore>,
    /// The next id a new cluster gets (ids are never reused).
    pub next_id: u32,
    /// Ids of the previous model's clusters that no longer exist.
    pub vanished: Vec<u32>,
}

/// Why clusters could not be fitted; the previous model stays.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// Settings that cannot work.
    #[error("cluster settings: {0}")]
    Settings(String),
    /// Too few customers, or all alike.
    #[error("cannot cluster: {0}")]
    Degenerate(String),
    /// linfa refused or failed.
    #[error("k-means with k = {k}: {message}")]
    Fit {
        /// The k being fitted.
        k: usize,
        /// linfa's error.
        message: String,
    },
}

impl Clustering {
    /// A customer's cluster from their raw feature values (in
    /// [`Clustering::features`] order): the nearest centre (k-means) or the
    /// component of the highest weighted likelihood (Gaussian mixture).
    pub fn assign(&self, raw: &[Option<f64>]) -> Option<&Cluster> {
        if raw.len() != self.features.len() {
            return None;
        }
        let point: Vec<f64> = self.features.iter().zip(raw).map(|(f, v)| f.scale(*v)).collect();
        if self.algorithm == Algorithm::Gmm {
            let score = |c: &Cluster| {
                c.gaussian.as_ref().map_or(f64::NEG_INFINITY, |g| g.log_score(&c.centre, &point))
            };
            return self.clusters.iter().max_by(|a, b| score(a).total_cmp(&score(b)).then(b.id.cmp(&a.id)));
        }
        self.clusters.iter().min_by(|a, b| {
            squared_distance(&a.centre, &point)
                .total_cmp(&squared_distance(&b.centre, &point))
                .then(a.id.cmp(&b.id))
        })
    }

    /// Fits clusters on `data` (one row per customer, raw values in the order
    /// of `names`, NaN where missing), keeping the ids of `previous`.
    pub fn fit(
        names: &[String],
        data: ArrayView2<'_, f64>,
        settings: &ClusterSettings,
        previous: Option<&Clustering>,
    ) -> Result<Self, ClusterError> {
        if settings.k_min < 2 || settings.k_max < settings.k_min {
            return Err(ClusterError::Settings(format!(
                "k_min = {} and k_max = {}: clustering needs 2 ≤ k_min ≤ k_max",
                settings.k_min, settings.k_max
            )));
        }
        if names.len() != data.ncols() || names.is_empty() {
            return Err(ClusterError::Settings(format!(
                "{} feature names for {} columns",
                names.len(),
                data.ncols()
            )));
        }
        let rows = data.nrows();
        if rows < settings.k_max.max(10) {
            return Err(ClusterError::Degenerate(format!(
                "{rows} customers are too few for up to {} clusters: lower trainer.k_max or raise trainer.min_buyers",
                settings.k_max
            )));
        }
        let features: Vec<ScaledFeature> =
            names.iter().zip(data.axis_iter(Axis(1))).map(|(n, c)| scaler(n, c)).collect();
        let scaled = Array2::from_shape_fn((rows, names.len()), |(i, j)| {
            let v = data[(i, j)];
            features[j].scale((!v.is_nan()).then_some(v))
        });
        if scaled.iter().all(|v| v.abs() < 1e-9) {
            return Err(ClusterError::Degenerate("every customer has the same features".into()));
        }
        // k is chosen on a sample; the chosen k is then fitted on all.
        let sample = sample_rows(&scaled, settings.sample);
        let scoring = sample_rows(&sample, settings.silhouette_sample);
        let mut best: Option<(usize, f64)> = None;
        let mut tried = Vec::new();
        for k in settings.k_min..=settings.k_max {
            let model = ClusterFit::new(settings.algorithm, &sample, k)?;
            let labels = model.labels(&scoring);
            let score = DatasetBase::from(scoring.clone())
                .with_targets(labels)
                .silhouette_score()
                .map_err(|e| ClusterError::Fit { k, message: e.to_string() })?;
            tracing::info!(k, silhouette = score, sample = sample.nrows(), "clusters: k tried");
            tried.push(KScore { k: i32::try_from(k).unwrap_or(i32::MAX), silhouette: score });
            if score.is_finite() && best.is_none_or(|(_, s)| score > s) {
                best = Some((k, score));
            }
        }
        let Some((k, silhouette)) = best else {
            return Err(ClusterError::Degenerate("no k gave a finite silhouette".into()));
        };
        tracing::info!(k, silhouette, customers = rows, "clusters: fitting the chosen k on every customer");
        let model = ClusterFit::new(settings.algorithm, &scaled, k)?;
        let labels = model.labels(&scaled);
        let mut counts = vec![0i64; k];
        for l in labels.iter() {
            counts[*l] += 1;
        }
        let centres = model.centres();
        if counts.iter().filter(|c| **c > 0).count() < 2 {
            return Err(ClusterError::Degenerate("every customer fell in one cluster".into()));
        }
        if centres.iter().any(|v| !v.is_finite()) {
            return Err(ClusterError::Degenerate("a cluster centre is not a number".into()));
        }
        let gaussians = model.gaussians(k)?;
        let mut fitted: Vec<Component> = centres
            .axis_iter(Axis(0))
            .zip(counts)
            .zip(gaussians)
            .filter(|((_, n), _)| *n > 0)
            .map(|((c, population), gaussian)| Component { centre: c.to_vec(), population, gaussian })
            .collect();
        // Biggest first: ids for new clusters are given in this order.
        fitted.sort_by(|a, b| {
            let bits = |c: &Component| c.centre.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            b.population.cmp(&a.population).then(bits(a).cmp(&bits(b)))
        });
        let mut fitted_model = Self::identify(features, fitted, rows, silhouette, settings, previous);
        fitted_model.tried = tried;
        fitted_model.algorithm = settings.algorithm;
        Ok(fitted_model)
    }

    /// Gives the fitted centres ids: the previous model's, matched by the
    /// least total distance, or new ones.
    fn identify(
        features: Vec<ScaledFeature>,
        fitted: Vec<Component>,
        rows: usize,
        silhouette: f64,
        settings: &ClusterSettings,
        previous: Option<&Clustering>,
    ) -> Self {
        let old: Vec<(&Cluster, Vec<f64>)> = previous
            .map(|p| {
                p.clusters
                    .iter()
                    .map(|c| {
                        // The previous centre in raw units, then in this model's coordinates.
                        let raw: Vec<Option<f64>> =
                            p.features.iter().zip(&c.centre).map(|(f, z)| Some(f.unscale(*z))).collect();
                        let here = features
                            .iter()
                            .map(|f| {
                                p.features
                                    .iter()
                                    .position(|o| o.name == f.name)
                                    .map_or(0.0, |i| f.scale(raw[i]))
                            })
                            .collect();
                        (c, here)
                    })
                    .collect()
            })
            .unwrap_or_default();
        let matched = match_centres(&fitted, &old, settings.match_distance);
        let mut next_id = previous.map_or(0, |p| p.next_id);
        // A matched cluster is the same group: it keeps its name (names are
        // relative to the population, which may have changed around it). A
        // new one is named from its centre against today's population.
        let kept: Vec<&str> = matched.iter().flatten().map(|(j, _)| old[*j].0.name.as_str()).collect();
        let names: Vec<String> = names_of(&features, &fitted)
            .into_iter()
            .zip(&matched)
            .enumerate()
            .map(|(i, (fresh, m))| match m {
                Some((j, _)) => old[*j].0.name.clone(),
                None if kept.contains(&fresh.as_str()) => format!("{fresh} ({})", i + 1),
                None => fresh,
            })
            .collect();
        let clusters: Vec<Cluster> = fitted
            .into_iter()
            .zip(names)
            .enumerate()
            .map(|(i, (Component { centre, population, gaussian }, name))| {
                let (id, drift) = match matched[i] {
                    Some((j, distance)) => {
                        (old[j].0.id, Some(Drift { centre_moved: distance, previous_share: old[j].0.share }))
                    }
                    None => {
                        next_id += 1;
                        (next_id - 1, None)
                    }
                };
                Cluster {
                    id,
                    name,
                    centre_raw: features.iter().zip(&centre).map(|(f, z)| f.unscale(*z)).collect(),
                    centre,
                    population,
                    share: population as f64 / rows as f64,
                    drift,
                    gaussian,
                }
            })
            .collect();
        let mut clusters = clusters;
        clusters.sort_by_key(|c| c.id);
        let vanished =
            old.iter().map(|(c, _)| c.id).filter(|id| clusters.iter().all(|c| c.id != *id)).collect();
        Self {
            algorithm: Algorithm::Kmeans,
            features,
            clusters,
            silhouette,
            tried: Vec::new(),
            next_id,
            vanished,
        }
    }
}

/// For each fitted centre, the previous cluster (index into `old`) it is
/// matched to and the distance, when within `limit`.
fn match_centres(
    fitted: &[Component],
    old: &[(&Cluster, Vec<f64>)],
    limit: f64,
) -> Vec<Option<(usize, f64)>> {
    let mut matched = vec![None; fitted.len()];
    if old.is_empty() {
        return matched;
    }
    let distance = |i: usize, j: usize| squared_distance(&fitted[i].centre, &old[j].1).sqrt();
    // kuhn_munkres maximises integer weights over rows ≤ columns: the smaller
    // side is the rows, weights are minus micro-distances.
    let transposed = fitted.len() > old.len();
    let (rows, cols) = if transposed { (old.len(), fitted.len()) } else { (fitted.len(), old.len()) };
    let weight = |r: usize, c: usize| {
        let d = if transposed { distance(c, r) } else { distance(r, c) };
        -((d * 1e6).round().min(1e15) as i64)
    };
    let weights = Matrix::from_fn(rows, cols, |(r, c)| weight(r, c));
    let (_, assignment) = kuhn_munkres(&weights);
    for (r, c) in assignment.into_iter().enumerate() {
        let (i, j) = if transposed { (c, r) } else { (r, c) };
        let d = distance(i, j);
        if d <= limit {
            matched[i] = Some((j, d));
        }
    }
    matched
}

/// The scaling of one column: logged when it has no negative value.
fn scaler(name: &str, column: ArrayView1<'_, f64>) -> ScaledFeature {
    let present: Vec<f64> = column.iter().copied().filter(|v| v.is_finite()).collect();
    let log = present.iter().all(|v| *v >= 0.0);
    let values: Vec<f64> = present.iter().map(|v| if log { v.ln_1p() } else { *v }).collect();
    let n = values.len().max(1) as f64;
    let mean = values.iter().sum::<f64>() / n;
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
    // Equal values (up to rounding) are not a direction to cluster along.
    let std = if var > 1e-12 * (mean * mean + 1.0) { var.sqrt() } else { 1.0 };
    ScaledFeature { name: name.to_owned(), log, mean: if values.is_empty() { 0.0 } else { mean }, std }
}

/// At most `n` rows drawn at random with a fixed seed: the same rows in
/// the same order give the same sample (callers keep rows in customer id
/// order), and an evenly spaced pick would alias with periodic orderings.
fn sample_rows(data: &Array2<f64>, n: usize) -> Array2<f64> {
    let rows = data.nrows();
    if rows <= n {
        return data.clone();
    }
    let mut picked = rand::seq::index::sample(&mut ChaCha8Rng::seed_from_u64(19), rows, n).into_vec();
    picked.sort_unstable();
    data.select(Axis(0), &picked)
}

/// One fitted centre, its customers and (a mixture) its shape.
struct Component {
    centre: Vec<f64>,
    population: i64,
    gaussian: Option<Gaussian>,
}

/// A fitted k-means or Gaussian mixture.
enum ClusterFit {
    Kmeans(KMeans<f64, L2Dist>),
    Gmm(Box<GaussianMixtureModel<f64>>),
}

impl ClusterFit {
    fn new(algorithm: Algorithm, data: &Array2<f64>, k: usize) -> Result<Self, ClusterError> {
        let fit_error = |message: String| ClusterError::Fit { k, message };
        let dataset = DatasetBase::from(data.clone());
        // linfa's default generators are seeded: the same data gives the same clusters.
        match algorithm {
            Algorithm::Kmeans => KMeans::params(k)
                .n_runs(3)
                .max_n_iterations(200)
                .tolerance(1e-6)
                .fit(&dataset)
                .map(Self::Kmeans)
                .map_err(|e| fit_error(e.to_string())),
            Algorithm::Gmm => GaussianMixtureModel::params(k)
                .n_runs(3)
                .max_n_iterations(300)
                .tolerance(1e-4)
                // Keeps a component on a nearly flat direction invertible.
                .reg_covariance(1e-4)
                .fit(&dataset)
                .map(|m| Self::Gmm(Box::new(m)))
                .map_err(|e| fit_error(e.to_string())),
        }
    }

    fn labels(&self, data: &Array2<f64>) -> Array1<usize> {
        match self {
            Self::Kmeans(m) => m.predict(data),
            Self::Gmm(m) => m.predict(data),
        }
    }

    fn centres(&self) -> &Array2<f64> {
        match self {
            Self::Kmeans(m) => m.centroids(),
            Self::Gmm(m) => m.means(),
        }
    }

    /// Each component's shape (`None` for each k-means centre).
    fn gaussians(&self, k: usize) -> Result<Vec<Option<Gaussian>>, ClusterError> {
        let Self::Gmm(m) = self else { return Ok(vec![None; k]) };
        let degenerate = |what: &str| ClusterError::Degenerate(format!("a mixture component's {what}"));
        m.weights()
            .iter()
            .zip(m.covariances().axis_iter(Axis(0)))
            .zip(m.precisions().axis_iter(Axis(0)))
            .map(|((weight, covariance), precision)| {
                let lower =
                    covariance.cholesky().map_err(|_| degenerate("covariance is not positive definite"))?;
                let log_det_covariance = 2.0 * lower.diag().iter().map(|v| v.ln()).sum::<f64>();
                let gaussian = Gaussian {
                    weight: *weight,
                    precision: precision.iter().copied().collect(),
                    log_det_covariance,
                };
                let finite = gaussian.weight > 0.0
                    && gaussian.log_det_covariance.is_finite()
                    && gaussian.precision.iter().all(|v| v.is_finite());
                if finite {
                    Ok(Some(gaussian))
                } else {
                    Err(degenerate("weight or covariance is not a number"))
                }
            })
            .collect()
    }
}

fn squared_distance(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| (x - y).powi(2)).sum()
}

/// Words for a feature far above / below the population.
fn words(feature: &str) -> (String, String) {
    let known = match feature {
        f if f.starts_with("orders_") || f == "lifetime_orders" => Some(("frequent", "rare buyers")),
        f if f.starts_with("revenue_") => Some(("high value", "low value")),
        "avg_order_value" => Some(("big baskets", "small baskets")),
        "days_since_last_order" => Some(("lapsed", "recent")),
        "tenure_days" => Some(("long-standing", "new")),
        "discount_share" | "avg_discount" => Some(("discount driven", "full price")),
        f if f.starts_with("sessions_")
            || f.starts_with("page_views_")
            || f.starts_with("product_views_") =>
        {
            Some(("active browsers", "rarely browsing"))
        }
        "categories_bought" => Some(("broad tastes", "one category")),
        "interpurchase_mean_days" => Some(("slow repurchase", "quick repurchase")),
        "cart_value" => Some(("full carts", "empty carts")),
        "weekend_share" => Some(("weekend shoppers", "weekday shoppers")),
        _ => None,
    };
    match known {
        Some((high, low)) => (high.to_owned(), low.to_owned()),
        None => (format!("high {feature}"), format!("low {feature}")),
    }
}

/// Each centre's name: the words of its features at least half a standard
/// deviation from the population, strongest first, up to three; "typical"
/// when none is. Names are made unique by adding the next feature's words.
fn names_of(features: &[ScaledFeature], fitted: &[Component]) -> Vec<String> {
    let ranked: Vec<Vec<String>> = fitted
        .iter()
        .map(|Component { centre, .. }| {
            let mut order: Vec<usize> = (0..centre.len()).collect();
            order.sort_by(|a, b| centre[*b].abs().total_cmp(&centre[*a].abs()).then(a.cmp(b)));
            order
                .into_iter()
                .map(|j| {
                    let (high, low) = words(&features[j].name);
                    let strength = centre[j].abs();
                    (if centre[j] >= 0.0 { high } else { low }, strength)
                })
                .filter(|(_, s)| *s >= 0.5)
                .map(|(w, _)| w)
                .fold(Vec::new(), |mut v, w| {
                    if !v.contains(&w) {
                        v.push(w);
                    }
                    v
                })
        })
        .collect();
    let mut names: Vec<String> = Vec::with_capacity(fitted.len());
    for (i, words) in ranked.iter().enumerate() {
        let mut take = words.len().min(3);
        let mut name = name_from(&words[..take]);
        while names.contains(&name) && take < words.len() {
            take += 1;
            name = name_from(&words[..take]);
        }
        if names.contains(&name) {
            name = format!("{name} ({})", i + 1);
        }
        names.push(name);
    }
    names
}

fn name_from(words: &[String]) -> String {
    if words.is_empty() { "typical".to_owned() } else { words.join(", ") }
}

#[cfg(test)]
mod tests;
