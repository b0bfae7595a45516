"""plasticnet: differentiable plasticity and backpropamine in PyTorch.

Plastic layers (:class:`PlasticRNNCell`, :class:`PlasticRNN`, :class:`PlasticLinear`, :class:`PlasticLSTMCell`,
:class:`PlasticLSTM`) whose connections carry Hebbian traces with learned plasticity coefficients and learned
neuromodulation, and the papers' experiments.
"""

from .errors import CheckpointError, ConfigError, DataError, PlasticnetError
from .layers import PlasticLinear, PlasticRNN, PlasticRNNCell, PlasticState
from .lstm import LSTMState, PlasticLSTM, PlasticLSTMCell
from .rules import ClippedHebb, DecayingHebb, Oja, Rule, SoftBoundHebb

__version__ = "0.1.0"

__all__ = [
    "PlasticRNNCell", "PlasticRNN", "PlasticLinear", "PlasticState",
    "PlasticLSTMCell", "PlasticLSTM", "LSTMState",
    "Rule", "DecayingHebb", "Oja", "ClippedHebb", "SoftBoundHebb",
    "PlasticnetError", "ConfigError", "DataError", "CheckpointError",
]
