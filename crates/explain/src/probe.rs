//! The source probe (audit test 1): can the *source* of an image be predicted from the model's own frozen
//! features? One-vs-rest L2-regularised logistic regression on standardised features, cross-validated with
//! folds that never split a patient (grouped k-fold), scored by the ROC AUC of "is source s" per source
//! (`cxr_core::auc::roc_auc`, the same AUC eval uses) and per pair of sources.
//!
//! A high source AUC means a shortcut is *available*; it is a shortcut the model can take when the label also
//! follows the source in its training split (the audit's verdict combines both).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{ExplainError, Result};

/// A dense row-major matrix of `f64`.
#[derive(Debug, Clone, PartialEq)]
pub struct Matrix {
    pub rows: usize,
    pub cols: usize,
    pub data: Vec<f64>,
}

impl Matrix {
    pub fn new(rows: usize, cols: usize, data: Vec<f64>) -> Result<Self> {
        if data.len() != rows * cols {
            return Err(ExplainError::shape(
                "matrix",
                format!("{rows}x{cols} with {} values", data.len()),
            ));
        }
        Ok(Self { rows, cols, data })
    }

    pub fn row(&self, i: usize) -> &[f64] {
        &self.data[i * self.cols..(i + 1) * self.cols]
    }

    /// The rows listed in `idx`, in that order.
    pub fn select(&self, idx: &[usize]) -> Matrix {
        let mut data = Vec::with_capacity(idx.len() * self.cols);
        for &i in idx {
            data.extend_from_slice(self.row(i));
        }
        Matrix {
            rows: idx.len(),
            cols: self.cols,
            data,
        }
    }
}

/// `features.csv` (`id, f0 … fN`) as written by the model's `embed`.
#[derive(Debug, Clone)]
pub struct Features {
    pub ids: Vec<String>,
    pub x: Matrix,
}

/// Reads `features.csv`: an `id` column then numeric columns; every row the same length, every value finite.
pub fn read_features(path: &Path) -> Result<Features> {
    let mut rdr = csv::ReaderBuilder::new()
        .from_path(path)
        .map_err(|e| csv_err(path, 0, e))?;
    let headers = rdr.headers().map_err(|e| csv_err(path, 1, e))?.clone();
    if headers.get(0).map(str::trim) != Some("id") || headers.len() < 2 {
        return Err(ExplainError::Csv {
            path: path.to_path_buf(),
            line: 1,
            message: "expected the header `id, f0, f1, ...`".into(),
        });
    }
    let cols = headers.len() - 1;
    let (mut ids, mut data) = (Vec::new(), Vec::new());
    for (k, rec) in rdr.records().enumerate() {
        let line = k as u64 + 2;
        let rec = rec.map_err(|e| csv_err(path, line, e))?;
        if rec.len() != cols + 1 {
            return Err(ExplainError::Csv {
                path: path.to_path_buf(),
                line,
                message: format!("{} fields, the header has {}", rec.len(), cols + 1),
            });
        }
        ids.push(rec[0].to_string());
        for (j, v) in rec.iter().skip(1).enumerate() {
            let x: f64 = v
                .trim()
                .parse()
                .ok()
                .filter(|x: &f64| x.is_finite())
                .ok_or_else(|| ExplainError::Csv {
                    path: path.to_path_buf(),
                    line,
                    message: format!("column `{}`: {v:?} is not a finite number", &headers[j + 1]),
                })?;
            data.push(x);
        }
    }
    let rows = ids.len();
    Ok(Features {
        ids,
        x: Matrix::new(rows, cols, data)?,
    })
}

fn csv_err(path: &Path, line: u64, e: csv::Error) -> ExplainError {
    ExplainError::Csv {
        path: path.to_path_buf(),
        line: e.position().map_or(line, |p| p.line()),
        message: e.to_string(),
    }
}

/// Per-column mean and standard deviation of a training set; constant columns get scale 1.
#[derive(Debug, Clone)]
pub struct Standardizer {
    pub mean: Vec<f64>,
    pub scale: Vec<f64>,
}

impl Standardizer {
    pub fn fit(x: &Matrix) -> Self {
        let n = x.rows.max(1) as f64;
        let mut mean = vec![0.0; x.cols];
        for i in 0..x.rows {
            for (m, v) in mean.iter_mut().zip(x.row(i)) {
                *m += v / n;
            }
        }
        let mut var = vec![0.0; x.cols];
        for i in 0..x.rows {
            for ((s, v), m) in var.iter_mut().zip(x.row(i)).zip(&mean) {
                *s += (v - m) * (v - m) / n;
            }
        }
        let scale = var
            .into_iter()
            .map(|v| if v > 1e-24 { v.sqrt() } else { 1.0 })
            .collect();
        Self { mean, scale }
    }

    pub fn transform(&self, x: &Matrix) -> Matrix {
        let mut out = x.clone();
        for row in out.data.chunks_mut(x.cols.max(1)) {
            for ((v, m), s) in row.iter_mut().zip(&self.mean).zip(&self.scale) {
                *v = (*v - m) / s;
            }
        }
        out
    }
}

/// Options of the logistic regression.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LogisticConfig {
    /// L2 penalty on the weights (not the bias), added to the *mean* log-loss as `l2/2 * |w|^2`.
    pub l2: f64,
    /// Most gradient iterations.
    pub max_iter: usize,
    /// Stop when the gradient's max-norm falls below this.
    pub tol: f64,
}

impl Default for LogisticConfig {
    fn default() -> Self {
        Self {
            l2: 1e-2,
            max_iter: 500,
            tol: 1e-6,
        }
    }
}

/// A binary logistic regression `P(y=1|x) = sigmoid(w·x + b)`.
#[derive(Debug, Clone, PartialEq)]
pub struct Logistic {
    pub weights: Vec<f64>,
    pub bias: f64,
    /// Iterations used, and whether the gradient tolerance was reached.
    pub iterations: usize,
    pub converged: bool,
}

fn sigmoid(z: f64) -> f64 {
    if z >= 0.0 {
        1.0 / (1.0 + (-z).exp())
    } else {
        let e = z.exp();
        e / (1.0 + e)
    }
}

/// Dot product with eight independent partial sums, so the compiler can vectorise it (a single running sum
/// is a serial chain of additions it may not reorder).
fn dot(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f64 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    let mut acc = [0f64; 8];
    for (x, y) in ca.zip(cb) {
        for k in 0..8 {
            acc[k] += x[k] * y[k];
        }
    }
    acc.iter().sum::<f64>() + tail
}

/// `y += alpha * x`.
fn axpy(y: &mut [f64], alpha: f64, x: &[f64]) {
    for (yj, xj) in y.iter_mut().zip(x) {
        *yj += alpha * xj;
    }
}

/// The training matrix of a logistic regression, in the cheaper of two exact parameterisations. With more
/// feature columns than rows (a CNN's 512-2048 features of a few hundred images), the penalised optimum's
/// weights lie in the span of the rows, `w = Xᵀa`, so the solver runs on `a` and the Gram matrix `XXᵀ`:
/// an iteration costs n² instead of n·d. Both forms take the same steps in exact arithmetic (only the
/// power iteration's estimate of the step size differs) and reach the same optimum (module test). Build it
/// once per training set and share it between the one-vs-rest fits.
#[derive(Debug, Clone)]
pub struct Design<'a> {
    x: &'a Matrix,
    /// `XXᵀ` (rows x rows, row-major) when the dual parameterisation is used.
    gram: Option<Vec<f64>>,
    /// λmax([X 1]ᵀ[X 1]), estimated by power iteration (30 steps) and inflated by 10 % for safety.
    lambda: f64,
}

impl<'a> Design<'a> {
    /// The dual form when the columns outnumber the rows, else the primal.
    pub fn new(x: &'a Matrix) -> Self {
        Self::with_form(x, x.cols > x.rows)
    }

    fn with_form(x: &'a Matrix, dual: bool) -> Self {
        let gram = dual.then(|| {
            let n = x.rows;
            let mut k = vec![0f64; n * n];
            k.par_chunks_mut(n.max(1)).enumerate().for_each(|(i, row)| {
                for (j, v) in row.iter_mut().enumerate() {
                    *v = dot(x.row(i), x.row(j));
                }
            });
            k
        });
        let mut design = Self {
            x,
            gram,
            lambda: 0.0,
        };
        design.lambda = design.power_iteration(30) * 1.1;
        design
    }

    /// Length of the solver's coefficient vector (weights, or one coefficient per row), bias excluded.
    fn coefs(&self) -> usize {
        if self.gram.is_some() {
            self.x.rows
        } else {
            self.x.cols
        }
    }

    /// The margins `Xw` of coefficients `v` (bias excluded): `Xv` in the primal, `XXᵀv` in the dual.
    fn margins(&self, v: &[f64]) -> Vec<f64> {
        match &self.gram {
            Some(k) => k
                .chunks(self.x.rows.max(1))
                .map(|row| dot(row, v))
                .collect(),
            None => (0..self.x.rows).map(|i| dot(self.x.row(i), v)).collect(),
        }
    }

    /// `Xᵀv` (v per row).
    fn transpose_times(&self, v: &[f64]) -> Vec<f64> {
        let mut out = vec![0f64; self.x.cols];
        for (i, &vi) in v.iter().enumerate() {
            axpy(&mut out, vi, self.x.row(i));
        }
        out
    }

    /// The penalised loss's gradient in coefficient space, from the residuals `r` (already over n): the
    /// weights' gradient is `Xᵀr + l2·w`, which is `Xᵀ(r + l2·a)` in the dual.
    fn gradient(&self, coef: &[f64], r: &[f64], l2: f64) -> Vec<f64> {
        let mut g = match self.gram {
            Some(_) => r.to_vec(),
            None => self.transpose_times(r),
        };
        axpy(&mut g, l2, coef);
        g
    }

    /// `|w|²` of coefficients `coef` whose margins are `margins` (`aᵀXXᵀa` in the dual).
    fn squared_norm(&self, coef: &[f64], margins: &[f64]) -> f64 {
        match self.gram {
            Some(_) => dot(coef, margins),
            None => dot(coef, coef),
        }
    }

    /// Whether every entry of the weights' gradient is below `tol`. In the dual the gradient is `Xᵀg`;
    /// its Euclidean norm, `sqrt(gᵀXXᵀg)`, comes free from `g`'s margins and bounds the max-norm on both
    /// sides, so `Xᵀg` is formed only in the narrow band where the bound cannot decide.
    fn gradient_below(&self, g: &[f64], g_margins: &[f64], tol: f64) -> bool {
        match self.gram {
            None => g.iter().all(|v| v.abs() < tol),
            Some(_) => {
                let norm = dot(g, g_margins).max(0.0).sqrt();
                if norm < tol {
                    true
                } else if norm >= tol * (self.x.cols as f64).sqrt() {
                    false
                } else {
                    self.transpose_times(g).iter().all(|v| v.abs() < tol)
                }
            }
        }
    }

    /// The weights of coefficients `coef`.
    fn weights(&self, coef: Vec<f64>) -> Vec<f64> {
        match self.gram {
            Some(_) => self.transpose_times(&coef),
            None => coef,
        }
    }

    /// Largest eigenvalue of [X 1]ᵀ[X 1], by power iteration; in the dual on [X 1][X 1]ᵀ = XXᵀ + 11ᵀ,
    /// which has the same nonzero eigenvalues.
    fn power_iteration(&self, iters: usize) -> f64 {
        let x = self.x;
        let dim = match self.gram {
            Some(_) => x.rows,
            None => x.cols + 1,
        };
        let mut v = vec![1.0 / (dim.max(1) as f64).sqrt(); dim];
        let mut lambda = 0.0;
        for _ in 0..iters {
            let w = match &self.gram {
                Some(_) => {
                    let total: f64 = v.iter().sum();
                    let mut w = self.margins(&v);
                    w.iter_mut().for_each(|wi| *wi += total);
                    w
                }
                None => {
                    let mut w = vec![0.0; dim];
                    for i in 0..x.rows {
                        let row = x.row(i);
                        let xv = dot(row, &v[..x.cols]) + v[x.cols];
                        axpy(&mut w[..x.cols], xv, row);
                        w[x.cols] += xv;
                    }
                    w
                }
            };
            let norm = dot(&w, &w).sqrt();
            if norm == 0.0 {
                return 1.0;
            }
            lambda = norm;
            v = w.into_iter().map(|wj| wj / norm).collect();
        }
        lambda.max(1e-12)
    }
}

/// An iterate of the solver: coefficients, bias, and the coefficients' margins (kept alongside, as every
/// update is linear, so the dual never recomputes `XXᵀa`).
#[derive(Debug, Clone)]
struct Iterate {
    coef: Vec<f64>,
    bias: f64,
    margins: Vec<f64>,
}

impl Iterate {
    fn zero(coefs: usize, rows: usize) -> Self {
        Self {
            coef: vec![0.0; coefs],
            bias: 0.0,
            margins: vec![0.0; rows],
        }
    }

    /// `self + beta * (self - other)`.
    fn extrapolate(&self, other: &Iterate, beta: f64) -> Iterate {
        let ex = |a: &[f64], b: &[f64]| -> Vec<f64> {
            a.iter().zip(b).map(|(s, o)| s + beta * (s - o)).collect()
        };
        Iterate {
            coef: ex(&self.coef, &other.coef),
            bias: self.bias + beta * (self.bias - other.bias),
            margins: ex(&self.margins, &other.margins),
        }
    }
}

impl Logistic {
    /// Minimises mean log-loss + `l2/2 |w|^2` by Nesterov's accelerated gradient with step 1/L (L bounded by
    /// a power iteration on XᵀX/n) and adaptive restart — convex and smooth, so it converges to the unique
    /// optimum without tuning. Works when `y` has a single class (the bias then runs towards that class).
    pub fn fit(x: &Matrix, y: &[bool], cfg: &LogisticConfig) -> Result<Self> {
        Self::fit_design(&Design::new(x), y, cfg)
    }

    /// [`Logistic::fit`] on a [`Design`] built once for several fits on the same rows.
    pub fn fit_design(design: &Design, y: &[bool], cfg: &LogisticConfig) -> Result<Self> {
        let x = design.x;
        if x.rows != y.len() || x.rows == 0 {
            return Err(ExplainError::invalid(
                "logistic regression",
                format!("{} rows and {} labels", x.rows, y.len()),
            ));
        }
        let n = x.rows;
        let yf: Vec<f64> = y.iter().map(|&b| if b { 1.0 } else { 0.0 }).collect();
        // L of the mean log-loss <= 0.25 * lambda_max([X 1]ᵀ[X 1]) / n.
        let step = 1.0 / (0.25 * design.lambda / n as f64 + cfg.l2);
        let objective = |p: &Iterate| -> f64 {
            let loss: f64 = p
                .margins
                .iter()
                .zip(&yf)
                .map(|(m, yi)| {
                    let z = m + p.bias;
                    // log(1 + e^z) - y z, stably.
                    z.max(0.0) + (-z.abs()).exp().ln_1p() - yi * z
                })
                .sum();
            loss / n as f64 + 0.5 * cfg.l2 * design.squared_norm(&p.coef, &p.margins)
        };
        let mut theta = Iterate::zero(design.coefs(), n);
        let mut look = theta.clone();
        let mut t = 1.0f64;
        let mut f_prev = objective(&theta);
        let (mut iterations, mut converged, mut restarted) = (0, false, false);
        for it in 0..cfg.max_iter {
            iterations = it + 1;
            let r: Vec<f64> = look
                .margins
                .iter()
                .zip(&yf)
                .map(|(m, yi)| (sigmoid(m + look.bias) - yi) / n as f64)
                .collect();
            let g = design.gradient(&look.coef, &r, cfg.l2);
            let g_bias: f64 = r.iter().sum();
            let g_margins = design.margins(&g);
            if g_bias.abs() < cfg.tol && design.gradient_below(&g, &g_margins, cfg.tol) {
                theta = look;
                converged = true;
                break;
            }
            let mut next = look.clone();
            axpy(&mut next.coef, -step, &g);
            next.bias -= step * g_bias;
            axpy(&mut next.margins, -step, &g_margins);
            let f_next = objective(&next);
            if f_next > f_prev && !restarted {
                // Momentum overshot: restart from the last iterate without momentum. (A plain gradient step
                // that still "increases" the objective is rounding noise near the optimum: taken anyway.)
                t = 1.0;
                look.clone_from(&theta);
                restarted = true;
                continue;
            }
            restarted = false;
            let t_next = (1.0 + (1.0 + 4.0 * t * t).sqrt()) / 2.0;
            let beta = (t - 1.0) / t_next;
            let prev = std::mem::replace(&mut theta, next);
            look = theta.extrapolate(&prev, beta);
            t = t_next;
            f_prev = f_next;
        }
        if !converged {
            tracing::debug!(iterations, "logistic regression stopped at max_iter");
        }
        Ok(Self {
            weights: design.weights(theta.coef),
            bias: theta.bias,
            iterations,
            converged,
        })
    }

    /// The log-odds `w·x + b`.
    pub fn decision(&self, row: &[f64]) -> f64 {
        dot(row, &self.weights) + self.bias
    }

    pub fn probability(&self, row: &[f64]) -> f64 {
        sigmoid(self.decision(row))
    }
}

/// Fold (0..k) of every sample so that all samples of a group (patient) share a fold and fold sizes are as
/// even as possible: groups by decreasing size (ties by name) each go to the currently smallest fold
/// (scikit-learn's `GroupKFold`).
pub fn group_k_fold(groups: &[String], k: usize) -> Result<Vec<usize>> {
    let mut sizes: BTreeMap<&str, usize> = BTreeMap::new();
    for g in groups {
        *sizes.entry(g.as_str()).or_default() += 1;
    }
    if k < 2 || sizes.len() < k {
        return Err(ExplainError::invalid(
            "grouped k-fold",
            format!(
                "{k} folds need at least {k} patients, found {}",
                sizes.len()
            ),
        ));
    }
    let mut order: Vec<(&str, usize)> = sizes.into_iter().collect();
    order.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let mut load = vec![0usize; k];
    let mut fold_of: BTreeMap<&str, usize> = BTreeMap::new();
    for (g, size) in order {
        let f = (0..k).min_by_key(|&f| (load[f], f)).unwrap_or(0);
        load[f] += size;
        fold_of.insert(g, f);
    }
    Ok(groups.iter().map(|g| fold_of[g.as_str()]).collect())
}

/// Options of [`source_probe`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ProbeConfig {
    pub folds: usize,
    pub logistic: LogisticConfig,
}

impl Default for ProbeConfig {
    fn default() -> Self {
        Self {
            folds: 5,
            logistic: LogisticConfig::default(),
        }
    }
}

/// The probe's AUC for one source (one-vs-rest).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceAuc {
    pub source: String,
    /// Images of this source.
    pub n: usize,
    /// ROC AUC of the out-of-fold "is this source" score; `None` when undefined.
    pub auc: Option<f64>,
}

/// The probe's AUC for telling source `a` (positive) from source `b`, on their images only.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PairAuc {
    pub a: String,
    pub b: String,
    pub auc: Option<f64>,
}

/// Result of [`source_probe`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeResult {
    /// Sources in sorted order (columns of `oof_scores`).
    pub sources: Vec<String>,
    pub per_source: Vec<SourceAuc>,
    pub pairs: Vec<PairAuc>,
    /// Out-of-fold log-odds, `oof_scores[i][s]` = image i is of source `sources[s]`; give them to
    /// `cxr-eval` for confidence intervals.
    pub oof_scores: Vec<Vec<f64>>,
    pub folds: usize,
}

/// Cross-validated source probe: per fold, standardise on the training part, fit one logistic regression per
/// source (in parallel), score the held-out part. `groups` are patient ids (never split across folds).
pub fn source_probe(
    x: &Matrix,
    sources: &[String],
    groups: &[String],
    cfg: &ProbeConfig,
) -> Result<ProbeResult> {
    if sources.len() != x.rows || groups.len() != x.rows {
        return Err(ExplainError::invalid(
            "source probe",
            format!(
                "{} feature rows, {} sources, {} patients",
                x.rows,
                sources.len(),
                groups.len()
            ),
        ));
    }
    let names: Vec<String> = sources
        .iter()
        .cloned()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    if names.len() < 2 {
        return Err(ExplainError::invalid(
            "source probe",
            format!("needs at least two sources, found {names:?}"),
        ));
    }
    let class: Vec<usize> = sources
        .iter()
        .map(|s| names.iter().position(|n| n == s).unwrap_or(0))
        .collect();
    let fold = group_k_fold(groups, cfg.folds)?;
    let mut oof = vec![vec![0.0; names.len()]; x.rows];
    for f in 0..cfg.folds {
        let train: Vec<usize> = (0..x.rows).filter(|&i| fold[i] != f).collect();
        let test: Vec<usize> = (0..x.rows).filter(|&i| fold[i] == f).collect();
        if test.is_empty() {
            continue;
        }
        let xtr = x.select(&train);
        let std = Standardizer::fit(&xtr);
        let (xtr, xte) = (std.transform(&xtr), std.transform(&x.select(&test)));
        let design = Design::new(&xtr);
        let models: Vec<Logistic> = (0..names.len())
            .into_par_iter()
            .map(|s| {
                let y: Vec<bool> = train.iter().map(|&i| class[i] == s).collect();
                Logistic::fit_design(&design, &y, &cfg.logistic)
            })
            .collect::<Result<_>>()?;
        for (r, &i) in test.iter().enumerate() {
            for (s, m) in models.iter().enumerate() {
                oof[i][s] = m.decision(xte.row(r));
            }
        }
        tracing::debug!(
            fold = f,
            train = train.len(),
            test = test.len(),
            "source probe fold done"
        );
    }
    let per_source = names
        .iter()
        .enumerate()
        .map(|(s, name)| {
            let scores: Vec<f64> = oof.iter().map(|r| r[s]).collect();
            let pos: Vec<bool> = class.iter().map(|&c| c == s).collect();
            SourceAuc {
                source: name.clone(),
                n: pos.iter().filter(|&&p| p).count(),
                auc: cxr_core::auc::roc_auc(&scores, &pos),
            }
        })
        .collect();
    let mut pairs = Vec::new();
    for a in 0..names.len() {
        for b in a + 1..names.len() {
            let idx: Vec<usize> = (0..x.rows)
                .filter(|&i| class[i] == a || class[i] == b)
                .collect();
            let scores: Vec<f64> = idx.iter().map(|&i| oof[i][a] - oof[i][b]).collect();
            let pos: Vec<bool> = idx.iter().map(|&i| class[i] == a).collect();
            pairs.push(PairAuc {
                a: names[a].clone(),
                b: names[b].clone(),
                auc: cxr_core::auc::roc_auc(&scores, &pos),
            });
        }
    }
    Ok(ProbeResult {
        sources: names,
        per_source,
        pairs,
        oof_scores: oof,
        folds: cfg.folds,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;
    use rand_distr::{Distribution, Normal};

    /// Gradient of the objective computed independently of `fit` (plain loops, no shared helpers).
    #[allow(clippy::needless_range_loop)] // index loops keep this reference implementation obvious
    fn objective_gradient(x: &Matrix, y: &[bool], m: &Logistic, l2: f64) -> Vec<f64> {
        let n = x.rows as f64;
        let mut g = vec![0.0; x.cols + 1];
        for i in 0..x.rows {
            let z: f64 = (0..x.cols).map(|j| x.row(i)[j] * m.weights[j]).sum::<f64>() + m.bias;
            let p = 1.0 / (1.0 + (-z).exp());
            let r = p - if y[i] { 1.0 } else { 0.0 };
            for j in 0..x.cols {
                g[j] += r * x.row(i)[j] / n;
            }
            g[x.cols] += r / n;
        }
        for j in 0..x.cols {
            g[j] += l2 * m.weights[j];
        }
        g
    }

    #[test]
    fn logistic_regression_reaches_the_optimum() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let normal = Normal::new(0.0, 1.0).unwrap();
        let (n, d) = (300, 6);
        let data: Vec<f64> = (0..n * d).map(|_| normal.sample(&mut rng)).collect();
        let x = Matrix::new(n, d, data).unwrap();
        let true_w = [1.5, -2.0, 0.0, 0.5, 0.0, 0.0];
        let y: Vec<bool> = (0..n)
            .map(|i| {
                let z = dot(x.row(i), &true_w) + 0.3;
                rng.random_bool(sigmoid(z))
            })
            .collect();
        let cfg = LogisticConfig {
            l2: 1e-3,
            max_iter: 5000,
            tol: 1e-9,
        };
        let m = Logistic::fit(&x, &y, &cfg).unwrap();
        assert!(m.converged, "{} iterations", m.iterations);
        let g = objective_gradient(&x, &y, &m, cfg.l2);
        assert!(g.iter().all(|v| v.abs() < 1e-8), "{g:?}");
        // The fit recovers the generating direction.
        assert!(m.weights[0] > 0.8 && m.weights[1] < -1.2, "{:?}", m.weights);
        assert!(
            m.weights[2].abs() < 0.4 && m.weights[4].abs() < 0.4,
            "{:?}",
            m.weights
        );
        let scores: Vec<f64> = (0..n).map(|i| m.decision(x.row(i))).collect();
        assert!(cxr_core::auc::roc_auc(&scores, &y).unwrap() > 0.8);
        // One class only: a fit still comes back, predicting that class.
        let all = vec![true; n];
        let m = Logistic::fit(&x, &all, &LogisticConfig::default()).unwrap();
        assert!(m.probability(x.row(0)) > 0.9);
        assert!(Logistic::fit(&x, &all[1..], &cfg).is_err());
    }

    #[test]
    fn the_dual_form_reaches_the_primal_optimum_on_wide_features() {
        // More columns than rows, as a CNN's features of a few hundred images: Design::new picks the dual.
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        let normal = Normal::new(0.0, 1.0).unwrap();
        let (n, d) = (40, 130);
        let x = Matrix::new(n, d, (0..n * d).map(|_| normal.sample(&mut rng)).collect()).unwrap();
        let y: Vec<bool> = (0..n)
            .map(|i| x.row(i)[0] + 0.5 * x.row(i)[1] > 0.2)
            .collect();
        let cfg = LogisticConfig {
            l2: 1e-1,
            max_iter: 20_000,
            tol: 1e-10,
        };
        assert!(Design::new(&x).gram.is_some());
        let dual = Logistic::fit(&x, &y, &cfg).unwrap();
        let primal = Logistic::fit_design(&Design::with_form(&x, false), &y, &cfg).unwrap();
        assert!(dual.converged && primal.converged);
        let g = objective_gradient(&x, &y, &dual, cfg.l2);
        assert!(g.iter().all(|v| v.abs() < 1e-9), "{g:?}");
        for (a, b) in dual.weights.iter().zip(&primal.weights) {
            assert!((a - b).abs() < 1e-7, "{a} vs {b}");
        }
        assert!((dual.bias - primal.bias).abs() < 1e-7);
    }

    #[test]
    fn grouped_folds_never_split_a_patient_and_stay_balanced() {
        let groups: Vec<String> = (0..103).map(|i| format!("p{}", (i * 7) % 37)).collect();
        let fold = group_k_fold(&groups, 5).unwrap();
        let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
        for (g, f) in groups.iter().zip(&fold) {
            assert_eq!(
                *seen.entry(g).or_insert(*f),
                *f,
                "patient {g} split across folds"
            );
        }
        let mut sizes = [0usize; 5];
        fold.iter().for_each(|&f| sizes[f] += 1);
        assert!(
            sizes.iter().max().unwrap() - sizes.iter().min().unwrap() <= 3,
            "{sizes:?}"
        );
        assert!(group_k_fold(&groups[..3], 5).is_err());
        assert!(group_k_fold(&groups, 1).is_err());
    }

    /// Tiny 16x16 "images": anatomy noise per patient, two images per patient; `border` brightens a 2-pixel
    /// frame (a collimation/border confounder) and `intensity` shifts every pixel (a processing confounder).
    /// Features: 4x4 block means plus the image's standard deviation, standing in for frozen CNN features.
    fn world(
        sources: &[(&str, f64, f64)],
        patients: usize,
        seed: u64,
    ) -> (Matrix, Vec<String>, Vec<String>) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let noise = Normal::new(0.0, 0.08).unwrap();
        let (mut data, mut src, mut grp) = (Vec::new(), Vec::new(), Vec::new());
        for (name, border, intensity) in sources {
            for p in 0..patients {
                let anatomy: Vec<f64> = (0..256)
                    .map(|_| 0.5 + 0.15 * noise.sample(&mut rng) / 0.08)
                    .collect();
                for _ in 0..2 {
                    let img: Vec<f64> = (0..256)
                        .map(|k| {
                            let (x, y) = (k % 16, k / 16);
                            let frame = x < 2 || y < 2 || x >= 14 || y >= 14;
                            anatomy[k]
                                + noise.sample(&mut rng)
                                + intensity
                                + if frame { *border } else { 0.0 }
                        })
                        .collect();
                    for by in 0..4 {
                        for bx in 0..4 {
                            let mut s = 0.0;
                            for y in 0..4 {
                                for x in 0..4 {
                                    s += img[(by * 4 + y) * 16 + bx * 4 + x];
                                }
                            }
                            data.push(s / 16.0);
                        }
                    }
                    let mean = img.iter().sum::<f64>() / 256.0;
                    data.push((img.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / 256.0).sqrt());
                    src.push(name.to_string());
                    grp.push(format!("{name}-{p}"));
                }
            }
        }
        let rows = src.len();
        (Matrix::new(rows, 17, data).unwrap(), src, grp)
    }

    #[test]
    fn probe_finds_planted_confounders_and_not_identical_sources() {
        let (x, src, grp) = world(
            &[
                ("a", 0.0, 0.0),
                ("border", 0.25, 0.0),
                ("bright", 0.0, 0.12),
                ("d", 0.0, 0.0),
            ],
            30,
            21,
        );
        let r = source_probe(&x, &src, &grp, &ProbeConfig::default()).unwrap();
        assert_eq!(r.sources, vec!["a", "border", "bright", "d"]);
        let auc = |s: &str| {
            r.per_source
                .iter()
                .find(|p| p.source == s)
                .unwrap()
                .auc
                .unwrap()
        };
        let pair = |a: &str, b: &str| {
            r.pairs
                .iter()
                .find(|p| p.a == a && p.b == b)
                .unwrap()
                .auc
                .unwrap()
        };
        assert!(auc("border") > 0.95, "{:?}", r.per_source);
        assert!(auc("bright") > 0.95, "{:?}", r.per_source);
        assert!(
            pair("a", "border") > 0.95 && pair("a", "bright") > 0.95,
            "{:?}",
            r.pairs
        );
        // a and d are drawn from the same generator: the probe cannot tell them apart.
        assert!((pair("a", "d") - 0.5).abs() < 0.2, "{:?}", r.pairs);
        assert!(auc("a") < 0.9 && auc("d") < 0.9, "{:?}", r.per_source);
        assert_eq!(r.oof_scores.len(), x.rows);
        assert_eq!(r.per_source.iter().map(|s| s.n).sum::<usize>(), x.rows);
    }

    #[test]
    fn probe_on_a_clean_world_finds_nothing() {
        let (x, src, grp) = world(&[("a", 0.0, 0.0), ("b", 0.0, 0.0), ("c", 0.0, 0.0)], 30, 5);
        let r = source_probe(&x, &src, &grp, &ProbeConfig::default()).unwrap();
        for s in &r.per_source {
            assert!(s.auc.unwrap() < 0.7, "{:?}", r.per_source);
        }
        assert!(
            source_probe(
                &x,
                &vec!["a".to_string(); x.rows],
                &grp,
                &ProbeConfig::default()
            )
            .is_err()
        );
    }

    #[test]
    fn features_csv_is_read_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("features.csv");
        std::fs::write(&p, "id,f0,f1\nx1,0.5,-1\nx2,2,3e-2\n").unwrap();
        let f = read_features(&p).unwrap();
        assert_eq!(f.ids, vec!["x1", "x2"]);
        assert_eq!(f.x.data, vec![0.5, -1.0, 2.0, 0.03]);
        std::fs::write(&p, "id,f0,f1\nx1,0.5,NaN\n").unwrap();
        let e = read_features(&p).unwrap_err().to_string();
        assert!(
            e.contains("features.csv") && e.contains("line 2") && e.contains("f1"),
            "{e}"
        );
        std::fs::write(&p, "id,f0,f1\nx1,0.5\n").unwrap();
        assert!(
            read_features(&p)
                .unwrap_err()
                .to_string()
                .contains("line 2")
        );
        std::fs::write(&p, "name,f0\nx1,0.5\n").unwrap();
        assert!(read_features(&p).is_err());
    }
}
