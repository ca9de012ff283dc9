from django.urls import path

from . import api, views

app_name = "gallery"

urlpatterns = [
    path("", views.GalleryView.as_view(), name="image-list"),
    path("home", views.GalleryView.as_view(), name="home"),
    path("images/<int:pk>/", views.ImageDetailView.as_view(), name="image-detail"),
    path("recommend", views.recommend_redirect, name="recommend"),
    path("search/", views.SearchView.as_view(), name="search"),
    path("api/images/<int:pk>/similar/", api.similar_images_json, name="api-similar"),
]
