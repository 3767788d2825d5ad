"""kit: a Kaggle kit for Facial Keypoints Detection."""
