//! Training a denoiser with the rectified-flow loss ([`crate::flow::loss`]): AdamW with explicit
//! weight decay, EMA of the weights, label dropout for classifier-free guidance, seeded and
//! reproducible, resumable from atomic checkpoints.
pub mod ema;
pub mod loss_log;
pub mod optim;
pub mod text_to_image;
pub mod trainer;

pub use ema::Ema;
pub use optim::{AdamW, AdamWConfig};
pub use text_to_image::TextToImageTask;
pub use trainer::{train, train_task, ClassConditional, InitCheckpoint, LrSchedule, RunOptions, RunPaths, TrainConfig, TrainReport, TrainState, TrainTask};
