from .weights import uses_random_weights


def embedding_model(request):
    """Every page warns when similarities come from untrained (random) weights."""
    return {"random_weights_demo": uses_random_weights()}
