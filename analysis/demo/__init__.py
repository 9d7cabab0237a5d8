"""The built-in demo workspace: the sample scenarios registered and audited (`build`), and the state of a
background build the dashboard shows (`status`). It sits in `analysis` because it drives the run engine;
`sample_models` only generates the data and trains the models."""
