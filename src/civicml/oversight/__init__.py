"""Human oversight of models before they decide about people: model cards, approval policies
and gates with separation of duties, and the model dashboard."""
