//! Where configuration comes from. Every source builds with the one pipeline
//! (`strait_config::build`) and hands the outcome to `Engine::apply`.

pub mod folder;
