from django.urls import path

from . import api, views

app_name = "gallery"

urlpatterns = [
    path("", views.GalleryView.as_view(), name="image-list"),
    path("home", views.GalleryView.as_view(), name="home"),
    path("images/<int:pk>/", views.ImageDetailView.as_view(), name="image-detail"),
    path("recommend", views.recommend_redirect, name="recommend"),
    path("search/", views.SearchView.as_view(), name="search"),
    # The JSON API (schema and docs pages in imagerec/urls.py). The similar-images URL is the
    # one scripts already use: same place, same keys (with more beside them), same errors.
    path("api/images/", api.ImageListView.as_view(), name="api-image-list"),
    path("api/images/<int:pk>/", api.ImageDetailView.as_view(), name="api-image-detail"),
    path("api/images/<int:pk>/similar/", api.SimilarImagesView.as_view(), name="api-similar"),
    path("api/search/", api.SearchView.as_view(), name="api-search"),
]
