//! Text encoders for text-to-image guidance, with the C-ERG rectification (ERG Sec. 3.2):
//! a temperature τ_c on the self-attention logits of layers [l_min^c, l_max^c), which gives the
//! "weak" conditioning φ_c^τ used as the negative.
pub mod clip;
pub mod encoder;
pub mod minilm;
pub mod t5;

pub use clip::{ClipText, ClipTextConfig};
pub use encoder::{empty_prompt_ids, TextEncoder};
pub use minilm::{BiasTemperature, MiniLm, MiniLmConfig, TextRectification};
pub use t5::{T5Config, T5Encoder};
