# Wrong solution for 03_lstm_step: the input and forget gates swapped (the order i, f,
# g, o read as f, i, g, o). With zero weights both gates are 1/2, so the public tests pass;
# with real weights the step differs from torch.nn.LSTMCell.
# expected: 3 of 10 points, fails test_matches_torch_lstmcell, test_matches_lmcore_lstmcell, test_six_steps_like_nn_lstm
import torch


def lstm_step(x, h, c, weight_ih, weight_hh, bias_ih, bias_hh):
    """One LSTM step (with the input and forget gates swapped)."""
    gates = x @ weight_ih.T + bias_ih + h @ weight_hh.T + bias_hh
    f, i, g, o = gates.chunk(4, dim=-1)
    c_next = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    h_next = torch.sigmoid(o) * torch.tanh(c_next)
    return h_next, c_next
