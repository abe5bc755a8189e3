//! Property tests of config loading: any text, and the shipped example with random edits,
//! gives a config or errors, never a panic. `PROPTEST_CASES` raises the case count.

use proptest::prelude::*;
use vigil_core::testing::{cases, env, mutated_example};

// Config loading -----------------------------------------------------------------------

proptest! {
    #![proptest_config(cases(256))]

    #[test]
    fn config_loading_of_any_text_is_ok_or_an_error(text in "\\PC{0,200}") {
        let _ = crate::config::Config::from_yaml(&text, env);
    }

    #[test]
    fn config_loading_of_a_mutated_example_is_ok_or_an_error(
        text in mutated_example(include_str!("../../config/anomaly.yaml")),
    ) {
        let _ = crate::config::Config::from_yaml(&text, env);
    }
}
