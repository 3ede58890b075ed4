//! Results: comparison tables and their renderings (terminal, Markdown, CSV, JSON, LaTeX),
//! exports of runs and metrics, and plots.

pub mod compare;
pub mod export;
pub mod figure;
pub mod html;
pub mod plot;
pub mod render;
