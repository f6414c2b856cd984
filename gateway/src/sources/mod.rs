//! Where configuration comes from. Every source builds with the one pipeline
//! (`strait_config::build`) and hands the outcome to `Engine::apply`: a folder
//! (`folder`) or a controller's push (`controller`).

pub mod controller;
pub mod folder;
