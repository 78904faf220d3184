"""Quickstart: certify a backdoor-poisoned digits classifier with Cert-SSBD and compare it with RAB.

Runs in about a minute on 2 CPU cores: ``python examples/quickstart.py``.
"""

import numpy as np
import torch

from art_certssbd import CertSSBDEstimator, RABEstimator
from art_certssbd.attacks import attack_success_rate, one_pixel, poison_dataset
from art_certssbd.datasets import load_digits
from art_certssbd.models import DigitsCNN

# Step 1: Load the embedded scikit-learn digits data: (N, 1, 8, 8) float32 in [0, 1], labels 0..9.
x_train, y_train, x_test, y_test = load_digits(random_state=0)

# Step 2: Poison 2% of the training set with a one-pixel backdoor trigger (L2 norm 1) that relabels to class 0.
trigger = one_pixel(delta=1.0)
x_poison, y_poison, is_poison = poison_dataset(x_train, y_train, trigger, rate=0.02, target=0, random_state=0)
print(f"poisoned {is_poison.sum()} of {len(x_train)} training samples")

# Step 3: Create the Cert-SSBD estimator around a PyTorch network (an ART randomized-smoothing classifier).
net = DigitsCNN(nb_classes=10)
estimator = CertSSBDEstimator(
    model=net,
    loss=torch.nn.CrossEntropyLoss(),
    input_shape=(1, 8, 8),
    nb_classes=10,
    optimizer=torch.optim.Adam(net.parameters(), lr=3e-3),
    clip_values=(0.0, 1.0),
    nb_models=32,
    scale=0.25,
    alpha=0.01,
    random_state=0,
)

# Step 4: Train the smoothed ensemble on the poisoned data (sample-specific sigma for every training sample).
estimator.fit(x_poison, y_poison, nb_epochs=10, batch_size=64)

# Step 5: Certify the test set: prediction (-1 = abstain) and the certified L2 radius of each input.
pred, radius = estimator.certify(x_test)
details = estimator.certify(x_test, return_details=True, update_memory=False)
radii = [0.0, 0.1, 0.2, 0.3, 0.4]
print("Cert-SSBD certified accuracy at radii", radii, ":", np.round(details.certified_accuracy(y_test, radii), 3))
print("                     (conservative)  :", np.round(details.certified_accuracy(y_test, radii, True), 3))

# Step 6: The same budget with RAB (one fixed sigma), the baseline.
net_rab = DigitsCNN(nb_classes=10)
rab = RABEstimator(
    net_rab,
    torch.nn.CrossEntropyLoss(),
    (1, 8, 8),
    10,
    optimizer=torch.optim.Adam(net_rab.parameters(), lr=3e-3),
    clip_values=(0.0, 1.0),
    nb_models=32,
    scale=0.25,
    alpha=0.01,
    random_state=0,
)
rab.fit(x_poison, y_poison, nb_epochs=10, batch_size=64)
rab_details = rab.certify(x_test, return_details=True)
print("RAB       certified accuracy at radii", radii, ":", np.round(rab_details.certified_accuracy(y_test, radii), 3))

# Step 7: The trigger at test time: the smoothed prediction of triggered inputs.
x_trigger = trigger(x_test)
pred_trigger, _ = estimator.certify(x_trigger, update_memory=False)
non_target = y_test != 0
asr = attack_success_rate(pred_trigger[non_target], y_test[non_target], 0)
print(f"attack success rate against Cert-SSBD: {asr:.3f}")
