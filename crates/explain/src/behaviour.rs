//! Does the model's score follow the source? The audit's behavioural tests of the model's *output* on the
//! test images, which work on the test sets people have: the paper's one-source-per-class splits (seen vs
//! unseen sources) and external test sets where each source holds both classes.
//!
//! - [`score_follows_source`]: within each class, the AUC of the score for "this image comes from source
//!   S" (each source against the rest of the class, and the training split's seen sources against the
//!   unseen ones where the test set has both). Within one class the label cannot explain a difference
//!   between sources, so a model whose output separates hospitals among images of the *same* class is
//!   using the hospital, or the sources differ in severity within the class (which is why the audit asks
//!   for a large effect before it flags; see `crate::audit`).
//! - [`auc_spread`]: the pooled AUC (all images of the sources that hold both classes) against the
//!   class-stratified AUC (the same pairs, but only those within one source, i.e. the within-source AUCs
//!   weighted by their Covid-19 x pneumonia pairs). A model that ranks by source has a pooled AUC far
//!   from its within-source AUCs: above them where the sources' case mixes differ, below them where a
//!   source's offset scrambles the ranking across sources.
//!
//! Both tests share one null hypothesis, "the score is independent of the source given the class", and
//! one permutation scheme: the source labels are shuffled *within each class*, among patients (all
//! images of a patient in one class move together, so several images of one person do not pose as
//! independent evidence), which keeps the number of patients of every source in every class. The
//! p-value is the share of shuffles (plus the observed labelling, so p is never 0) whose statistic is at
//! least as far from its null value as the observed one (two-sided). Seeded with
//! [`cxr_core::stats::rng_for`], so the same inputs give the same p. AUCs are
//! [`cxr_core::auc::roc_auc`] (ranks only: any monotone transform of the score gives the same figures),
//! CIs the workspace's stratified cluster bootstrap ([`cxr_core::stats::bootstrap_interval`], patients
//! resampled within group).
//!
//! Direction: each comparison carries the training split's **association** of its two sides, the Covid-19
//! share of the group's training images minus that of the rest's (the rest being the unseen sources, the
//! whole training split's share stands in: what the model was taught to expect). A shortcut pushes a
//! source's images towards the class its source held in training: that is the direction the audit may flag
//! (`crate::audit`). A source the training split never saw, or saw with both classes alike, has no such
//! direction: a large offset there is a domain shift of the score (the default `reproduce`'s clean-world
//! control scored an unseen source higher in both classes, AUC 0.95), reported but not a shortcut the data
//! taught.
//!
//! Pooling the comparisons: the test reports every comparison with its raw permutation p and its Holm
//! adjusted p over all comparisons made (both classes), and the audit flags on the largest separation
//! max(AUC, 1 - AUC) whose Holm p is small. Why not one class-stratified pooled AUC: a model may follow a
//! source in one class only (the paper world's split 1: the seen Covid-19 source scores high, the unseen
//! Covid-19 sources low, while every pneumonia source scores low), and pooling would dilute that one
//! large effect with null ones; Holm keeps the family-wise error at the stated level however many
//! comparisons a test set allows. A comparison needs at least `min_patients` patients on each side;
//! comparisons that split a class into the same two groups (a class with two sources; the seen group
//! being one source) are made once.

use std::collections::{BTreeMap, BTreeSet};

use cxr_core::auc::roc_auc;
use cxr_core::stats::{Clusters, bootstrap_interval, rng_for};
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};

use crate::audit::Figure;

/// The test images as the behavioural tests see them, one entry per image in every slice.
#[derive(Debug, Clone, Copy)]
pub struct ScoreTable<'a> {
    /// The model's score (probability or logit: only ranks matter).
    pub scores: &'a [f64],
    /// Covid-19 (the positive class) or other pneumonia.
    pub positives: &'a [bool],
    pub sources: &'a [String],
    /// Patient keys (an empty key makes the image its own patient).
    pub patients: &'a [String],
}

impl ScoreTable<'_> {
    fn len(&self) -> usize {
        self.scores
            .len()
            .min(self.positives.len())
            .min(self.sources.len())
            .min(self.patients.len())
    }
}

/// Sample sizes and resampling of the behavioural tests.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BehaviourConfig {
    /// Fewest patients on each side of a comparison (and, for the spread test, of each class in a source).
    pub min_patients: usize,
    /// Source-label shuffles of the permutation p-values (resolution `1 / (permutations + 1)`).
    pub permutations: usize,
    /// Bootstrap resamples of the CIs.
    pub resamples: usize,
    /// CI level.
    pub level: f64,
    pub seed: u64,
}

impl Default for BehaviourConfig {
    /// Five patients a side: with 5 + 5 the smallest exact two-sided p is 2 / C(10, 5) = 0.008, small
    /// enough to survive Holm over a handful of comparisons. 4,999 shuffles resolve p to 2e-4, below Holm's
    /// 0.05 / 12 for the most comparisons six sources can give.
    fn default() -> Self {
        Self {
            min_patients: 5,
            permutations: 4_999,
            resamples: 1_000,
            level: 0.95,
            seed: 0x5eed_0f5c,
        }
    }
}

/// One comparison of [`score_follows_source`]: within one class, the images of `group` against those of
/// `rest`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceComparison {
    /// `covid` or `pneumonia`.
    pub class: String,
    /// A source's name, or `seen` (the training split's sources).
    pub group: String,
    /// `rest` (the class's other sources) or `unseen`.
    pub against: String,
    pub group_sources: Vec<String>,
    pub rest_sources: Vec<String>,
    /// Images and patients on each side.
    pub n_group: usize,
    pub n_rest: usize,
    pub patients_group: usize,
    pub patients_rest: usize,
    /// AUC of the score for "the image is in `group`" (0.5: the score says nothing about the source; below
    /// 0.5: the group scores lower), with its bootstrap CI.
    pub auc: Figure,
    /// Two-sided permutation p of |AUC - 0.5| (source labels shuffled among the class's patients).
    pub p: f64,
    /// `p` adjusted by Holm's step-down over every comparison of the test.
    pub p_holm: f64,
    /// Training association of the two sides: the Covid-19 share of the group's training images minus the
    /// rest's (the whole training split's share when the rest is unseen). `None` when the group has no
    /// training image (an unseen source) or no training split was given.
    #[serde(default)]
    pub association: Option<f64>,
}

impl SourceComparison {
    /// max(AUC, 1 - AUC): how well the score tells the two groups apart, whichever scores higher.
    pub fn separation(&self) -> f64 {
        self.auc.value.max(1.0 - self.auc.value)
    }

    /// Whether the score moves the group the way its training association points (at least `min_association`
    /// of it): towards Covid-19 for a group that held more Covid-19 in training than the rest.
    pub fn follows_training_association(&self, min_association: f64) -> bool {
        self.association
            .is_some_and(|a| a.abs() >= min_association && (self.auc.value - 0.5) * a > 0.0)
    }

    /// `covid: seen (v2-cov19-nii) vs unseen (bimcv, covid19-ar)`.
    pub fn describe(&self) -> String {
        format!(
            "{}: {} ({}) vs {} ({})",
            self.class,
            self.group,
            self.group_sources.join(", "),
            self.against,
            self.rest_sources.join(", ")
        )
    }
}

/// The score-follows-source test's figures (the verdict's thresholds are applied in `crate::audit`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceFollowing {
    pub comparisons: Vec<SourceComparison>,
    /// Why no comparison could be made (no class with two groups of `min_patients` patients).
    #[serde(default)]
    pub not_run: Option<String>,
    pub min_patients: usize,
    pub permutations: usize,
}

impl SourceFollowing {
    /// The comparison with the largest separation (ties: the smaller Holm p, then the first).
    pub fn strongest(&self) -> Option<&SourceComparison> {
        self.comparisons.iter().reduce(|best, c| {
            let (a, b) = (c.separation(), best.separation());
            if a > b || (a == b && c.p_holm < best.p_holm) {
                c
            } else {
                best
            }
        })
    }
}

/// One source's own AUC in [`auc_spread`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceAuc {
    pub source: String,
    pub auc: f64,
    pub n_covid: usize,
    pub n_pneumonia: usize,
}

/// The per-source AUC spread test's figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AucSpread {
    /// The sources holding both classes (at least `min_patients` patients of each), with their AUCs.
    pub per_source: Vec<SourceAuc>,
    /// AUC over every image of those sources.
    #[serde(default)]
    pub pooled: Option<f64>,
    /// The within-source AUCs weighted by their pairs: the share of within-source Covid-19 x pneumonia
    /// pairs the score orders right.
    #[serde(default)]
    pub stratified: Option<f64>,
    /// pooled - stratified, with its bootstrap CI.
    #[serde(default)]
    pub difference: Option<Figure>,
    /// Two-sided permutation p of |pooled - stratified| (source labels shuffled within class).
    #[serde(default)]
    pub p: Option<f64>,
    #[serde(default)]
    pub not_run: Option<String>,
    pub min_patients: usize,
}

/// Patients of one class: clusters of image indices (into the class's own vectors) with their source.
struct ClassClusters {
    /// Per image of the class: its score and the index of its cluster.
    scores: Vec<f64>,
    cluster_of: Vec<usize>,
    /// Per cluster: its source.
    source: Vec<String>,
    /// Per image: the patient key handed to the bootstrap (unique per cluster).
    keys: Vec<String>,
}

fn class_clusters(t: &ScoreTable, positive: bool) -> ClassClusters {
    let mut index: BTreeMap<(String, String), usize> = BTreeMap::new();
    let mut out = ClassClusters {
        scores: Vec::new(),
        cluster_of: Vec::new(),
        source: Vec::new(),
        keys: Vec::new(),
    };
    for i in 0..t.len() {
        if t.positives[i] != positive || !t.scores[i].is_finite() {
            continue;
        }
        // A patient's images stay together; an image without a patient is a patient of its own.
        let patient = if t.patients[i].trim().is_empty() {
            format!("\u{0}image{i}")
        } else {
            t.patients[i].clone()
        };
        let key = (t.sources[i].clone(), patient);
        let next = out.source.len();
        let c = *index.entry(key.clone()).or_insert_with(|| {
            out.source.push(key.0.clone());
            next
        });
        out.scores.push(t.scores[i]);
        out.cluster_of.push(c);
        out.keys.push(format!("{}\u{0}{}", key.0, key.1));
    }
    out
}

/// Mid-ranks (1-based, ties share their mean rank) of `scores`.
fn mid_ranks(scores: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    let mut ranks = vec![0.0; scores.len()];
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && scores[order[j + 1]] == scores[order[i]] {
            j += 1;
        }
        let r = (i + j) as f64 / 2.0 + 1.0;
        for &k in &order[i..=j] {
            ranks[k] = r;
        }
        i = j + 1;
    }
    ranks
}

/// AUC of a group from the rank sum of its images (Mann-Whitney).
fn auc_from_ranks(rank_sum: f64, n_group: f64, n_rest: f64) -> f64 {
    (rank_sum - n_group * (n_group + 1.0) / 2.0) / (n_group * n_rest)
}

/// Holm's step-down adjustment (adjusted p in the input's order).
fn holm(p: &[f64]) -> Vec<f64> {
    let m = p.len();
    let mut order: Vec<usize> = (0..m).collect();
    order.sort_by(|&a, &b| p[a].total_cmp(&p[b]));
    let mut out = vec![0.0; m];
    let mut running: f64 = 0.0;
    for (k, &i) in order.iter().enumerate() {
        running = running.max(((m - k) as f64 * p[i]).min(1.0));
        out[i] = running;
    }
    out
}

/// Images per class of each source in the model's training split: (Covid-19, other pneumonia).
pub type TrainingMix = BTreeMap<String, (usize, usize)>;

/// Covid-19 share of the training images of `sources` (`None` without any).
fn covid_share<'a>(
    mix: &TrainingMix,
    sources: impl IntoIterator<Item = &'a String>,
) -> Option<f64> {
    let (c, n) = sources
        .into_iter()
        .filter_map(|s| mix.get(s))
        .fold((0usize, 0usize), |(c, n), &(a, b)| (c + a, n + a + b));
    (n > 0).then(|| c as f64 / n as f64)
}

/// The score-follows-source test: within each class, each source against the rest of the class, and the
/// seen sources (those of `training`, the model's training split) against the others where the class has
/// both. See the module documentation for the statistics.
pub fn score_follows_source(
    t: &ScoreTable,
    training: Option<&TrainingMix>,
    cfg: &BehaviourConfig,
) -> SourceFollowing {
    let seen: Option<BTreeSet<String>> = training.map(|m| {
        m.iter()
            .filter(|(_, (a, b))| a + b > 0)
            .map(|(s, _)| s.clone())
            .collect()
    });
    let seen = seen.as_ref().filter(|s| !s.is_empty());
    let overall = training.and_then(|m| covid_share(m, m.keys()));
    let mut comparisons = Vec::new();
    let mut counts_by_class = Vec::new();
    for (positive, class) in [(true, "covid"), (false, "pneumonia")] {
        let cc = class_clusters(t, positive);
        let mut patients: BTreeMap<&str, usize> = BTreeMap::new();
        for s in &cc.source {
            *patients.entry(s.as_str()).or_default() += 1;
        }
        counts_by_class.push(format!(
            "{class}: {}",
            if patients.is_empty() {
                "no image".to_string()
            } else {
                patients
                    .iter()
                    .map(|(s, n)| format!("{s} {n}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        ));
        let present: BTreeSet<String> = patients.keys().map(|s| s.to_string()).collect();
        let mut groups: Vec<(String, String, BTreeSet<String>)> = Vec::new();
        if let Some(seen) = seen {
            let g: BTreeSet<String> = present.intersection(seen).cloned().collect();
            groups.push(("seen".into(), "unseen".into(), g));
        }
        for s in &present {
            groups.push((s.clone(), "rest".into(), BTreeSet::from([s.clone()])));
        }
        let mut done: Vec<BTreeSet<String>> = Vec::new();
        let ranks = mid_ranks(&cc.scores);
        for (name, against, g) in groups {
            let rest: BTreeSet<String> = present.difference(&g).cloned().collect();
            let n_g: usize = g.iter().map(|s| patients[s.as_str()]).sum();
            let n_r: usize = rest.iter().map(|s| patients[s.as_str()]).sum();
            if n_g < cfg.min_patients.max(1)
                || n_r < cfg.min_patients.max(1)
                || done.contains(&g)
                || done.contains(&rest)
            {
                continue;
            }
            done.push(g.clone());
            let in_cluster: Vec<bool> = cc.source.iter().map(|s| g.contains(s)).collect();
            let in_group: Vec<bool> = cc.cluster_of.iter().map(|&c| in_cluster[c]).collect();
            let Some(auc) = roc_auc(&cc.scores, &in_group) else {
                continue;
            };
            let label = format!("score-follows-source {class} {name}");
            let keys: Vec<&str> = cc.keys.iter().map(String::as_str).collect();
            let clusters = Clusters::new(&in_group, &keys);
            let (ci, _) = bootstrap_interval(
                &clusters,
                cfg.resamples,
                rng_for(cfg.seed, &label),
                cfg.level,
                |idx| {
                    let s: Vec<f64> = idx.iter().map(|&i| cc.scores[i]).collect();
                    let g: Vec<bool> = idx.iter().map(|&i| in_group[i]).collect();
                    roc_auc(&s, &g)
                },
            );
            let p = cluster_permutation_p(&ranks, &cc.cluster_of, &in_cluster, auc, cfg, &label);
            let association = training.and_then(|m| {
                let a_g = covid_share(m, &g)?;
                let a_r = covid_share(m, &rest).or(overall)?;
                Some(a_g - a_r)
            });
            comparisons.push(SourceComparison {
                class: class.into(),
                group: name,
                against,
                group_sources: g.iter().cloned().collect(),
                rest_sources: rest.iter().cloned().collect(),
                n_group: in_group.iter().filter(|&&x| x).count(),
                n_rest: in_group.iter().filter(|&&x| !x).count(),
                patients_group: n_g,
                patients_rest: n_r,
                auc: match ci {
                    Some([lo, hi]) => Figure::with_ci(auc, lo, hi),
                    None => Figure::point(auc),
                },
                p,
                p_holm: p,
                association,
            });
        }
    }
    let adjusted = holm(&comparisons.iter().map(|c| c.p).collect::<Vec<_>>());
    for (c, p) in comparisons.iter_mut().zip(adjusted) {
        c.p_holm = p;
    }
    let not_run = comparisons.is_empty().then(|| {
        format!(
            "no class holds two groups of sources with at least {} patients each (patients per source: {})",
            cfg.min_patients,
            counts_by_class.join("; ")
        )
    });
    SourceFollowing {
        comparisons,
        not_run,
        min_patients: cfg.min_patients,
        permutations: cfg.permutations,
    }
}

/// Permutation p of one within-class comparison: the clusters' group labels shuffled, the AUC recomputed
/// from the images' fixed mid-ranks.
fn cluster_permutation_p(
    ranks: &[f64],
    cluster_of: &[usize],
    in_cluster: &[bool],
    observed: f64,
    cfg: &BehaviourConfig,
    label: &str,
) -> f64 {
    let k = in_cluster.len();
    let (mut rank_sum, mut size) = (vec![0.0; k], vec![0usize; k]);
    for (i, &c) in cluster_of.iter().enumerate() {
        rank_sum[c] += ranks[i];
        size[c] += 1;
    }
    let n = ranks.len();
    let distance = (observed - 0.5).abs();
    let mut rng = rng_for(cfg.seed, &format!("{label} permutation"));
    let mut labels = in_cluster.to_vec();
    let mut extreme = 1usize;
    for _ in 0..cfg.permutations {
        labels.shuffle(&mut rng);
        let (mut r, mut m) = (0.0, 0usize);
        for c in 0..k {
            if labels[c] {
                r += rank_sum[c];
                m += size[c];
            }
        }
        let auc = auc_from_ranks(r, m as f64, (n - m) as f64);
        if (auc - 0.5).abs() >= distance - 1e-12 {
            extreme += 1;
        }
    }
    extreme as f64 / (cfg.permutations + 1) as f64
}

/// Pooled and stratified AUC of images `idx` (both classes) whose source index is `source[i]`.
fn pooled_and_stratified(
    scores: &[f64],
    positives: &[bool],
    source: &[usize],
    n_sources: usize,
) -> Option<(f64, f64)> {
    let pooled = roc_auc(scores, positives)?;
    let (mut concordant, mut pairs) = (0.0, 0.0);
    for s in 0..n_sources {
        let idx: Vec<usize> = (0..scores.len()).filter(|&i| source[i] == s).collect();
        let sc: Vec<f64> = idx.iter().map(|&i| scores[i]).collect();
        let po: Vec<bool> = idx.iter().map(|&i| positives[i]).collect();
        let n_pos = po.iter().filter(|&&p| p).count() as f64;
        let n_neg = po.len() as f64 - n_pos;
        if let Some(a) = roc_auc(&sc, &po) {
            concordant += a * n_pos * n_neg;
            pairs += n_pos * n_neg;
        }
    }
    (pairs > 0.0).then(|| (pooled, concordant / pairs))
}

/// The per-source AUC spread test on the sources that hold both classes. See the module documentation.
pub fn auc_spread(t: &ScoreTable, cfg: &BehaviourConfig) -> AucSpread {
    let n = t.len();
    let min = cfg.min_patients.max(1);
    // Patients per (source, class).
    let mut patients: BTreeMap<(&str, bool), BTreeSet<String>> = BTreeMap::new();
    for i in (0..n).filter(|&i| t.scores[i].is_finite()) {
        let key = if t.patients[i].trim().is_empty() {
            format!("\u{0}image{i}")
        } else {
            t.patients[i].clone()
        };
        patients
            .entry((t.sources[i].as_str(), t.positives[i]))
            .or_default()
            .insert(key);
    }
    let count = |s: &str, c: bool| patients.get(&(s, c)).map_or(0, BTreeSet::len);
    let all: BTreeSet<&str> = patients.keys().map(|(s, _)| *s).collect();
    let eligible: Vec<&str> = all
        .iter()
        .copied()
        .filter(|s| count(s, true) >= min && count(s, false) >= min)
        .collect();
    let mut out = AucSpread {
        per_source: Vec::new(),
        pooled: None,
        stratified: None,
        difference: None,
        p: None,
        not_run: None,
        min_patients: cfg.min_patients,
    };
    if eligible.len() < 2 {
        out.not_run = Some(format!(
            "{} source(s) hold both classes with at least {} patients of each (two are needed){}",
            eligible.len(),
            cfg.min_patients,
            if all.is_empty() {
                String::new()
            } else {
                format!(
                    "; patients per source (Covid-19/pneumonia): {}",
                    all.iter()
                        .map(|s| format!("{s} {}/{}", count(s, true), count(s, false)))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }
        ));
        return out;
    }
    let idx: Vec<usize> = (0..n)
        .filter(|&i| t.scores[i].is_finite() && eligible.contains(&t.sources[i].as_str()))
        .collect();
    let scores: Vec<f64> = idx.iter().map(|&i| t.scores[i]).collect();
    let positives: Vec<bool> = idx.iter().map(|&i| t.positives[i]).collect();
    let source: Vec<usize> = idx
        .iter()
        .map(|&i| {
            eligible
                .iter()
                .position(|s| *s == t.sources[i])
                .unwrap_or(0)
        })
        .collect();
    for (k, s) in eligible.iter().enumerate() {
        let sc: Vec<f64> = (0..idx.len())
            .filter(|&i| source[i] == k)
            .map(|i| scores[i])
            .collect();
        let po: Vec<bool> = (0..idx.len())
            .filter(|&i| source[i] == k)
            .map(|i| positives[i])
            .collect();
        if let Some(auc) = roc_auc(&sc, &po) {
            out.per_source.push(SourceAuc {
                source: s.to_string(),
                auc,
                n_covid: po.iter().filter(|&&p| p).count(),
                n_pneumonia: po.iter().filter(|&&p| !p).count(),
            });
        }
    }
    let Some((pooled, stratified)) =
        pooled_and_stratified(&scores, &positives, &source, eligible.len())
    else {
        out.not_run = Some("the AUCs are undefined".into());
        return out;
    };
    let diff = pooled - stratified;
    // Clusters: (class, source, patient); the permutation shuffles the source among a class's clusters.
    let keys: Vec<String> = idx
        .iter()
        .map(|&i| {
            let p = if t.patients[i].trim().is_empty() {
                format!("\u{0}image{i}")
            } else {
                t.patients[i].clone()
            };
            format!("{}\u{0}{}\u{0}{p}", t.positives[i], t.sources[i])
        })
        .collect();
    let mut cluster_ids: BTreeMap<&str, usize> = BTreeMap::new();
    let mut cluster_of = Vec::with_capacity(idx.len());
    let mut cluster_source = Vec::new();
    let mut cluster_class = Vec::new();
    for (j, k) in keys.iter().enumerate() {
        let next = cluster_source.len();
        let c = *cluster_ids.entry(k.as_str()).or_insert_with(|| {
            cluster_source.push(source[j]);
            cluster_class.push(positives[j]);
            next
        });
        cluster_of.push(c);
    }
    let label = "auc-spread";
    let mut rng = rng_for(cfg.seed, &format!("{label} permutation"));
    let mut extreme = 1usize;
    let mut valid = 1usize;
    let by_class: Vec<Vec<usize>> = [true, false]
        .iter()
        .map(|&c| {
            (0..cluster_class.len())
                .filter(|&k| cluster_class[k] == c)
                .collect()
        })
        .collect();
    let mut shuffled_source = cluster_source.clone();
    let mut image_source = source.clone();
    for _ in 0..cfg.permutations {
        for members in &by_class {
            let mut labels: Vec<usize> = members.iter().map(|&k| cluster_source[k]).collect();
            labels.shuffle(&mut rng);
            for (&k, l) in members.iter().zip(labels) {
                shuffled_source[k] = l;
            }
        }
        for (j, &c) in cluster_of.iter().enumerate() {
            image_source[j] = shuffled_source[c];
        }
        if let Some((p, s)) =
            pooled_and_stratified(&scores, &positives, &image_source, eligible.len())
        {
            valid += 1;
            if (p - s).abs() >= diff.abs() - 1e-12 {
                extreme += 1;
            }
        }
    }
    let key_refs: Vec<&str> = keys.iter().map(String::as_str).collect();
    let clusters = Clusters::new(&positives, &key_refs);
    let (ci, _) = bootstrap_interval(
        &clusters,
        cfg.resamples,
        rng_for(cfg.seed, label),
        cfg.level,
        |b| {
            let sc: Vec<f64> = b.iter().map(|&i| scores[i]).collect();
            let po: Vec<bool> = b.iter().map(|&i| positives[i]).collect();
            let so: Vec<usize> = b.iter().map(|&i| source[i]).collect();
            pooled_and_stratified(&sc, &po, &so, eligible.len()).map(|(p, s)| p - s)
        },
    );
    out.pooled = Some(pooled);
    out.stratified = Some(stratified);
    out.difference = Some(match ci {
        Some([lo, hi]) => Figure::with_ci(diff, lo, hi),
        None => Figure::point(diff),
    });
    out.p = Some(extreme as f64 / valid as f64);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    struct World {
        scores: Vec<f64>,
        positives: Vec<bool>,
        sources: Vec<String>,
        patients: Vec<String>,
    }

    impl World {
        fn table(&self) -> ScoreTable<'_> {
            ScoreTable {
                scores: &self.scores,
                positives: &self.positives,
                sources: &self.sources,
                patients: &self.patients,
            }
        }
    }

    /// `per` images per (source, class); score = disease term + `offset(source)` + a little spread.
    fn world(sources: &[&str], per: usize, offset: impl Fn(&str) -> f64, disease: f64) -> World {
        let mut w = World {
            scores: Vec::new(),
            positives: Vec::new(),
            sources: Vec::new(),
            patients: Vec::new(),
        };
        let mut state = 99u64;
        let mut noise = || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 11) as f64 / (1u64 << 53) as f64
        };
        for s in sources {
            for covid in [true, false] {
                for k in 0..per {
                    w.scores
                        .push(noise() + offset(s) + if covid { disease } else { 0.0 });
                    w.positives.push(covid);
                    w.sources.push(s.to_string());
                    w.patients.push(format!("{s}-{covid}-{k}"));
                }
            }
        }
        w
    }

    fn cfg() -> BehaviourConfig {
        BehaviourConfig {
            permutations: 999,
            resamples: 200,
            ..Default::default()
        }
    }

    #[test]
    fn a_score_that_ignores_the_source_does_not_follow_it() {
        let w = world(&["a", "b", "c"], 20, |_| 0.0, 0.8);
        let r = score_follows_source(&w.table(), None, &cfg());
        assert!(r.not_run.is_none());
        // Three sources per class, one against the rest each: 6 comparisons.
        assert_eq!(r.comparisons.len(), 6, "{r:#?}");
        let top = r.strongest().unwrap();
        assert!(top.separation() < 0.75, "{top:#?}");
        assert!(r.comparisons.iter().all(|c| c.p_holm > 0.05), "{r:#?}");
        let s = auc_spread(&w.table(), &cfg());
        let d = s.difference.unwrap();
        assert!(d.value.abs() < 0.05 && s.p.unwrap() > 0.05, "{s:#?}");
        assert_eq!(s.per_source.len(), 3);
    }

    #[test]
    fn a_score_that_reads_the_source_follows_it_within_every_class() {
        // Source b adds 2 to every score: within each class, b against the rest separates perfectly.
        let w = world(
            &["a", "b", "c"],
            12,
            |s| if s == "b" { 2.0 } else { 0.0 },
            0.6,
        );
        let r = score_follows_source(&w.table(), None, &cfg());
        let top = r.strongest().unwrap();
        assert_eq!(top.group, "b");
        assert_eq!(top.auc.value, 1.0);
        assert!(top.p_holm < 0.01, "{top:#?}");
        assert_eq!((top.n_group, top.n_rest), (12, 24));
        // The permutation is deterministic.
        assert_eq!(score_follows_source(&w.table(), None, &cfg()), r);
        // Equal prevalence: the offset scrambles the ranking across sources, the pooled AUC falls below the
        // within-source ones.
        let s = auc_spread(&w.table(), &cfg());
        assert!(s.difference.unwrap().value < -0.1, "{s:#?}");
        assert!(s.p.unwrap() < 0.01, "{s:#?}");
    }

    #[test]
    fn seen_against_unseen_and_duplicates_are_made_once() {
        // Paper-world split 1 in miniature: Covid-19 from v2 (seen) and bimcv (unseen); pneumonia from nih only.
        let mut w = world(&["v2"], 8, |_| 0.0, 1.0);
        let b = world(&["bimcv"], 8, |_| -1.0, 1.0);
        let keep = |w: &World, covid: bool| -> Vec<usize> {
            (0..w.scores.len())
                .filter(|&i| w.positives[i] == covid)
                .collect()
        };
        let mut v = World {
            scores: Vec::new(),
            positives: Vec::new(),
            sources: Vec::new(),
            patients: Vec::new(),
        };
        for (src, idx) in [(&w, keep(&w, true)), (&b, keep(&b, true))] {
            for i in idx {
                v.scores.push(src.scores[i]);
                v.positives.push(true);
                v.sources.push(src.sources[i].clone());
                v.patients.push(src.patients[i].clone());
            }
        }
        for i in keep(&w, false) {
            v.scores.push(w.scores[i]);
            v.positives.push(false);
            v.sources.push("nih".into());
            v.patients.push(w.patients[i].clone());
        }
        w = v;
        // Trained on v2 (Covid-19 only) and nih (pneumonia only).
        let training =
            TrainingMix::from([("v2".to_string(), (40, 0)), ("nih".to_string(), (0, 40))]);
        let r = score_follows_source(&w.table(), Some(&training), &cfg());
        // Covid-19: seen (v2) vs unseen (bimcv) only: v2 vs rest and bimcv vs rest split the class the same way.
        assert_eq!(r.comparisons.len(), 1, "{r:#?}");
        let c = &r.comparisons[0];
        assert_eq!((c.class.as_str(), c.group.as_str()), ("covid", "seen"));
        assert_eq!(c.auc.value, 1.0);
        // v2 held Covid-19 only, the model's training split half: the seen Covid-19 source is pushed up, the
        // way its training association points.
        assert_eq!(c.association, Some(0.5));
        assert!(c.follows_training_association(0.25));
        // 8 + 8 patients: the exact two-sided p is 2 / C(16, 8) = 1.6e-4, the shuffles' floor 1e-3.
        assert!(c.p < 0.005, "{c:#?}");
        assert_eq!(
            c.describe(),
            "covid: seen (v2) vs unseen (bimcv)",
            "{}",
            c.describe()
        );
        // The spread test needs sources with both classes.
        let s = auc_spread(&w.table(), &cfg());
        assert!(s.not_run.unwrap().contains("0 source(s)"));
    }

    #[test]
    fn too_few_patients_and_clustered_images_are_not_evidence() {
        // Two sources of 3 patients each, per class: not run.
        let w = world(&["a", "b"], 3, |s| if s == "b" { 5.0 } else { 0.0 }, 0.0);
        let r = score_follows_source(&w.table(), None, &cfg());
        assert!(r.comparisons.is_empty());
        let why = r.not_run.unwrap();
        assert!(
            why.contains("at least 5 patients") && why.contains("covid: a 3, b 3"),
            "{why}"
        );
        // Ten images per source but only two patients each: patients are the unit.
        let mut w = world(&["a", "b"], 10, |s| if s == "b" { 5.0 } else { 0.0 }, 0.0);
        for (i, p) in w.patients.iter_mut().enumerate() {
            *p = format!("p{}", i / 5);
        }
        let r = score_follows_source(&w.table(), None, &cfg());
        assert!(r.comparisons.is_empty(), "{r:#?}");
    }

    #[test]
    fn holm_adjusts_step_down() {
        let a = holm(&[0.01, 0.04, 0.03, 0.5]);
        assert_eq!(a, vec![0.04, 0.09, 0.09, 0.5]);
        assert!(holm(&[]).is_empty());
    }
}
