//! Profiles: `quick` (CPU, small images, the `frozen` fast path instead of Finetune1/2, said plainly in the
//! report) and `paper` (224 px, the published modes, epochs and early stopping; meant for a GPU and real data).

use serde::Serialize;

use crate::config::{ProfileName, StudyConfig};

/// Everything the profile fixes (`results.json` `profile`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Profile {
    pub name: &'static str,
    pub per_source: usize,
    pub world_size: u32,
    pub preprocess_size: u32,
    pub image_size: usize,
    /// `Some(mode)` replaces every experiment's mode (the quick profile's frozen fast path).
    pub mode_override: Option<&'static str>,
    pub max_epochs: usize,
    pub patience: usize,
    pub batch_size: usize,
    pub learning_rate: f64,
    pub segment_quick: bool,
    /// Images per source and class explained with Grad-CAM.
    pub gradcam_per_group: usize,
    /// Test images per source and class in the occlusion tests.
    pub occlusion_per_group: usize,
    /// Occlusion fills (`mean`, `noise`).
    pub occlusion_fills: &'static str,
    /// Counterfactual pairs per confounder and direction in the confounder test (synthetic worlds; 0 = off).
    pub confounder_pairs: usize,
    pub notes: Vec<String>,
}

impl Profile {
    /// The profile `config` names, with its overrides (world size, images per source, input size) applied.
    pub fn of(config: &StudyConfig) -> Self {
        let mut p = match config.profile {
            ProfileName::Quick => Profile {
                name: "quick",
                per_source: 60,
                world_size: 256,
                preprocess_size: 256,
                image_size: 128,
                mode_override: Some("frozen"),
                max_epochs: 300,
                patience: 40,
                batch_size: 8,
                learning_rate: 1e-3,
                segment_quick: true,
                gradcam_per_group: 4,
                occlusion_per_group: 40,
                occlusion_fills: "mean",
                confounder_pairs: 16,
                notes: vec![
                    "Quick profile (CPU): the backbone runs in inference mode and only the paper's head is trained \
                     (mode `frozen`) instead of Finetune1/Finetune2, so models named finetune1/finetune2 are \
                     trained identically here; images are 128 px instead of 224; Adam at 1e-3 instead of 1e-4, \
                     batch 8 and early-stopping patience 40, because a head on a few dozen cached feature vectors needs \
                     many small steps; the head's input is standardised with the training images' feature \
                     means and standard deviations (random-backbone features sit at arbitrary scales), and \
                     equal validation accuracies are told apart by the validation loss; no 10x \
                     augmentation (it would multiply the backbone passes by ten). Use `--profile paper` on a \
                     GPU for the published setting."
                        .into(),
                ],
            },
            ProfileName::Paper => Profile {
                name: "paper",
                per_source: 200,
                world_size: 512,
                preprocess_size: 512,
                image_size: 224,
                mode_override: None,
                max_epochs: 200,
                patience: 5,
                batch_size: 32,
                learning_rate: 1e-4,
                segment_quick: false,
                gradcam_per_group: 8,
                occlusion_per_group: 1000,
                occlusion_fills: "mean,noise",
                confounder_pairs: 48,
                notes: vec![
                    "Paper profile: 224 px, Finetune1/Finetune2 as published, Adam 1e-4, at most 200 epochs, \
                     early stopping after 5 epochs without a better validation accuracy."
                        .into(),
                ],
            },
        };
        if let Some(n) = config.per_source {
            p.per_source = n;
        }
        if let Some(s) = config.world_size {
            p.world_size = s;
            p.preprocess_size = p.preprocess_size.max(s);
        }
        if let Some(s) = config.image_size {
            p.image_size = s;
        }
        if !config.device.trim().eq_ignore_ascii_case("cpu") {
            p.notes.push(format!(
                "Classifiers trained on device `{}`; explanations and audits ran on the CPU.",
                config.device.trim()
            ));
        }
        p.notes.push(if config.per_image_norm {
            "Inputs: every image is standardised on its own pixels (mean 0, standard deviation 1) before the \
             backbone, which removes each source's global brightness and contrast; texture, sharpness and the \
             shape of the grey curve remain. `--no-per-image-norm` feeds the images as they are."
                .into()
        } else {
            "Inputs: each image as it is, ImageNet normalisation only (`--no-per-image-norm`).".into()
        });
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_apply_and_notes_say_what_ran() {
        let quick = Profile::of(&StudyConfig::default());
        assert_eq!(
            (quick.name, quick.image_size, quick.mode_override),
            ("quick", 128, Some("frozen"))
        );
        assert!(quick.notes[1].starts_with("Inputs: every image is standardised"));
        let cfg = StudyConfig {
            profile: ProfileName::Paper,
            world_size: Some(1024),
            image_size: Some(96),
            device: "cuda:1".into(),
            per_image_norm: false,
            ..Default::default()
        };
        let p = Profile::of(&cfg);
        assert_eq!(
            (p.world_size, p.preprocess_size, p.image_size),
            (1024, 1024, 96)
        );
        assert!(p.notes.iter().any(|n| n.contains("device `cuda:1`")));
        assert!(
            p.notes
                .last()
                .unwrap()
                .contains("ImageNet normalisation only")
        );
    }
}
