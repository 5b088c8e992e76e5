//! Evaluation runs as in the ERG paper: metrics per run appended to a results file that survives
//! interruptions, hyperparameter selection by mean rank over all metrics (Appendix A.1), and
//! reports (tables, metric-vs-value plots, mean ± std over seeds).
pub mod imagenet;
pub mod rank;
pub mod report;
pub mod results;
pub mod run;
pub mod seeds;
pub mod shard;
pub mod sweep;
pub mod text;

pub use rank::{mean_ranks, select_best, Direction, MetricSpec};
pub use results::{ResultsFile, RunRecord};
pub use run::{
    evaluate, evaluate_conditions, metrics_from_parts, reference, run_key, Bench, BenchPaths, Conditions, EvalConfig, Reference, SampleScorer, Scorer,
};
pub use text::{evaluate_prompts, PromptSet, TextBench};
