"""What every layer shares and nothing else: the one user-facing error (errors), files written
atomically (fileio), the competition's keypoint vocabulary (keypoints) and the kit's own
source tree (source). It imports nothing of the kit.
"""
