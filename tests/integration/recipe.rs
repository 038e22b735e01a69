//! `phoenix recipe run` and `recipe api` from the command line.
