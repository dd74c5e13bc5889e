"""A gradient-coded logistic regression in ten lines (local mode; or mpirun -n 5 python estimator.py)."""
from sklearn.datasets import load_breast_cancer
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

from gc_fast import GradientCodedLogisticRegression

X, y = load_breast_cancer(return_X_y=True)
X_train, X_test, y_train, y_test = train_test_split(StandardScaler().fit_transform(X), y, random_state=0)
model = GradientCodedLogisticRegression(scheme="crc", n_stragglers=1, delay="count:k=1,seconds=0.05",
                                        l2=1e-3, max_iter=200, fit_intercept=True).fit(X_train, y_train)
if model.result_.rank == 0:
    print(f"test accuracy {model.score(X_test, y_test):.3f}, {model.result_.n_skipped} straggler messages "
          f"skipped, {model.result_.times.sum():.2f} s ({model.result_.mode} mode)")
