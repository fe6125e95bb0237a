"""lbnet_deploy.quality: the paper's protocol without torch: MATLAB-compatible bicubic
(`imresize`) and PSNR/SSIM on the Y channel (`metrics`)."""

__all__ = ["imresize", "metrics"]
